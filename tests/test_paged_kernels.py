"""Per-row positions and paged K/V: the reference twins against straightforward dense loops.

Continuous batching gives every row its own length: ``attend`` takes per-row positions, and the
paged kernels read each row's keys through its block table. The dense loops below build each
row's keys position by position from the pool and take one softmax per query, in float64.

The Triton kernels run here too: on CPU tensors in Triton's interpreter (tests/conftest.py selects
it without CUDA; fp32 only: it truncates fp32 -> bf16 and its bf16 dot is wrong), on CUDA tensors
where there is a GPU; the ``gpu``-marked tests at the end check them in bf16 and fp32 at the
models' shapes.
"""

import copy

import pytest
import torch
import triton
import triton.language as tl

from helpers import fresh_seed, rel
import layers.backends as backends
from layers.attention import (
    FP8_MAX,
    DiffAttnCore,
    attend,
    attention_ref,
    attention_sdpa,
    gather_pages,
    paged_attend,
    paged_attention_ref,
    paged_store,
    quantize_kv_fp8,
    tokens_contiguous,
)
from layers.rope import apply_rotary, rotary_store, rotary_store_ref
from layers.rope_triton import _round_e4m3


def naive_attention(q, k, v, q_pos, k_pos, window=None, scale=None):
    """q (B, T, Hq, D), k, v (B, S, Hk, D), q_pos (B, T), k_pos (B, S): one softmax per (row, query)
    over the keys it sees, float64; zeros where it sees none."""
    B, T, Hq, D = q.shape
    Hk = k.shape[2]
    scale = D**-0.5 if scale is None else scale
    out = torch.zeros(B, T, Hq, v.shape[-1], dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            qp = int(q_pos[b, t])
            vis = [s for s in range(k.shape[1]) if 0 <= int(k_pos[b, s]) <= qp
                   and (window is None or qp - int(k_pos[b, s]) < window)]
            if not vis:
                continue
            kk = k[b, vis].double().repeat_interleave(Hq // Hk, dim=1)  # (n, Hq, D)
            vv = v[b, vis].double().repeat_interleave(Hq // Hk, dim=1)
            p = (torch.einsum("hd,nhd->hn", q[b, t].double(), kk) * scale).softmax(-1)
            out[b, t] = torch.einsum("hn,nhd->hd", p, vv)
    return out


def rows_from_pool(pool, table, lengths, scale=None):
    """Row b's keys at positions 0..lengths[b]-1, read one position at a time: (n, H, D) each."""
    bs = pool.shape[1]
    rows = []
    for b, n in enumerate(lengths):
        blk = [int(table[b, p // bs]) for p in range(n)]
        x = torch.stack([pool[blk[p], p % bs].double() for p in range(n)]) if n else pool[:0, 0].double()
        if scale is not None and n:
            x = x * torch.stack([scale[blk[p], p % bs].double() for p in range(n)])[..., None]
        rows.append(x)
    return rows


def random_paged(B, lengths, block_size, Hk, D, num_blocks=None, dtype=torch.float32, garbage=True):
    """Pools with random contents and a block table of distinct, shuffled blocks per row; table
    entries past a row's blocks hold out-of-range ids (they must never be read)."""
    M = max(-(-n // block_size) for n in lengths) + 1
    need = sum(-(-n // block_size) for n in lengths)
    num_blocks = num_blocks or need + 7
    k_pool = torch.randn(num_blocks, block_size, Hk, D).to(dtype)
    v_pool = torch.randn(num_blocks, block_size, Hk, D).to(dtype)
    perm = torch.randperm(num_blocks)
    table = torch.full((B, M), num_blocks + 1000 if garbage else 0, dtype=torch.int32)
    used = 0
    for b, n in enumerate(lengths):
        nb = -(-n // block_size)
        table[b, :nb] = perm[used:used + nb].int()
        used += nb
    return k_pool, v_pool, table


# ----------------------------------------------------------------------------- per-row positions


@pytest.mark.parametrize("T, Hq, Hk, window", [(1, 6, 2, None), (5, 6, 2, 7), (3, 4, 4, None), (1, 8, 1, 3)])
def test_attend_with_per_row_positions_matches_dense_loop(T, Hq, Hk, window):
    seed = fresh_seed()
    B, S, D = 3, 40, 16
    q = torch.randn(B, T, Hq, D)
    k, v = torch.randn(B, S, Hk, D), torch.randn(B, S, Hk, D)
    # every row its own slot positions (a shuffled ring with empty slots) and query positions
    k_pos = torch.stack([torch.randperm(S) - int(torch.randint(0, 8, ())) for _ in range(B)])
    q_pos = torch.stack([torch.sort(torch.randperm(S)[:T]).values for _ in range(B)])
    want = naive_attention(q, k, v, q_pos, k_pos, window)
    for fn in (attention_ref, attend, attention_sdpa):
        got = fn(q, k, v, q_pos, k_pos, window=window)
        assert got.shape == (B, T, Hq, D)
        assert torch.allclose(got.double(), want, atol=1e-5), (fn.__name__, seed)


def test_shared_and_per_row_positions_agree():
    seed = fresh_seed()
    B, T, S = 2, 4, 30
    q, k, v = torch.randn(B, T, 4, 8), torch.randn(B, S, 2, 8), torch.randn(B, S, 2, 8)
    q_pos, k_pos = torch.arange(20, 24), torch.arange(-6, 24)
    start = torch.tensor([0, 3])
    for window in (None, 5):
        shared = attention_ref(q, k, v, q_pos, k_pos, start, window)
        assert torch.equal(shared, attention_ref(q, k, v, q_pos.expand(B, T), k_pos.expand(B, S), start, window))
        assert torch.equal(shared, attention_ref(q, k, v, q_pos, k_pos.expand(B, S), start, window)), seed
        assert torch.allclose(attention_sdpa(q, k, v, q_pos.expand(B, T), k_pos, start, window), shared, atol=1e-6)


def test_a_query_that_sees_no_key_gets_zeros():
    q, k, v = torch.randn(2, 1, 2, 8), torch.randn(2, 5, 2, 8), torch.randn(2, 5, 2, 8)
    out = attention_ref(q, k, v, torch.tensor([[-1], [4]]), torch.arange(5))
    assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.isfinite(out).all() and out[1].abs().sum() > 0


# ----------------------------------------------------------------------------- paged attention


@pytest.mark.parametrize("block_size, lengths, Hq, Hk, window", [
    (4, (1, 4, 5, 13), 6, 2, None),     # lengths at, under and over block boundaries
    (16, (1, 16, 17, 40), 8, 2, None),
    (16, (3, 33, 48, 70), 4, 4, 20),    # window: blocks before it are not read
    (8, (100, 2, 9), 8, 1, 8),          # very different lengths in one batch, MQA
])
def test_paged_attention_ref_matches_dense_loop(block_size, lengths, Hq, Hk, window):
    seed = fresh_seed()
    B, D = len(lengths), 16
    k_pool, v_pool, table = random_paged(B, lengths, block_size, Hk, D)
    if window is not None:  # entries of blocks wholly before the window may be stale too
        for b, n in enumerate(lengths):
            table[b, :max(0, n - window) // block_size] = 10**6
    q = torch.randn(B, 1, Hq, D)
    q_pos = torch.tensor(lengths) - 1
    got = paged_attention_ref(q, k_pool, v_pool, table, q_pos, window)
    assert got.shape == (B, 1, Hq, D) and got.dtype == q.dtype
    lo = [0 if window is None else max(0, n - window) // block_size * block_size for n in lengths]
    for b, n in enumerate(lengths):
        ks = rows_from_pool(k_pool, table[b:b + 1].clamp(max=k_pool.shape[0] - 1), [n])[0]
        vs = rows_from_pool(v_pool, table[b:b + 1].clamp(max=k_pool.shape[0] - 1), [n])[0]
        pos = torch.arange(n)[None]
        pos = torch.where(pos >= lo[b], pos, -1)  # stale blocks: never visible (window) anyway
        want = naive_attention(q[b:b + 1], ks[None], vs[None], q_pos[b:b + 1, None], pos, window)
        assert torch.allclose(got[b:b + 1].double(), want, atol=1e-5), (seed, b)
    assert torch.equal(paged_attend(q, k_pool, v_pool, table, q_pos, window), got)  # on CPU: the reference


def test_paged_attention_scale_and_empty_rows():
    seed = fresh_seed()
    k_pool, v_pool, table = random_paged(3, (7, 1, 20), 4, 2, 8)
    q = torch.randn(3, 1, 4, 8)
    q_pos = torch.tensor([6, -1, 19])  # row 1: a batch's unused row
    got = paged_attention_ref(q, k_pool, v_pool, table, q_pos, scale=0.3)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    ks = rows_from_pool(k_pool, table, (7, 0, 20))
    vs = rows_from_pool(v_pool, table, (7, 0, 20))
    for b in (0, 2):
        want = naive_attention(q[b:b + 1], ks[b][None], vs[b][None], q_pos[b:b + 1, None],
                               torch.arange(len(ks[b]))[None], scale=0.3)
        assert torch.allclose(got[b:b + 1].double(), want, atol=1e-5), seed


def test_gather_pages_reads_blocks_in_table_order():
    k_pool, _, table = random_paged(2, (9, 3), 4, 2, 8, garbage=False)
    rows = gather_pages(k_pool, table)
    assert rows.shape == (2, table.shape[1] * 4, 2, 8)
    for b, n in enumerate((9, 3)):
        assert torch.equal(rows[b, :n].double(), rows_from_pool(k_pool, table, (9, 3))[b])


@pytest.mark.parametrize("lengths, block_size", [((1, 17, 64, 5), 16), ((30, 2), 4)])
def test_differential_forward_paged_matches_forward_on_gathered_keys(lengths, block_size):
    seed = fresh_seed()
    H, G, D = 8, 4, 16
    core = DiffAttnCore(D, layer_idx=3)
    for p in (core.lambda_q1, core.lambda_k1, core.lambda_q2, core.lambda_k2):
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.normal_(core.subln.weight)
    B = len(lengths)
    k_pool, v_pool, table = random_paged(B, lengths, block_size, G, D)
    q = torch.randn(B, 1, H, D)
    q_pos = torch.tensor(lengths) - 1
    with torch.no_grad():
        got = core.forward_paged(q, k_pool, v_pool, table, q_pos)
        exact = copy.deepcopy(core).double()
        ks, vs = rows_from_pool(k_pool, table, lengths), rows_from_pool(v_pool, table, lengths)
        for b, n in enumerate(lengths):  # each row alone, its keys contiguous, slot s = position s
            want = exact(q[b:b + 1].double(), ks[b][None], vs[b][None], q_pos[b:b + 1])
            assert torch.allclose(got[b:b + 1].double(), want, atol=1e-5), (seed, b)
            same = core(q[b:b + 1], ks[b][None].float(), vs[b][None].float(), q_pos[b:b + 1])
            assert torch.allclose(got[b:b + 1], same, atol=1e-6), (seed, b)
    assert got.shape == (B, 1, H * D)


# ----------------------------------------------------------------------------- writes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_store_writes_each_token_at_its_slot(dtype):
    seed = fresh_seed()
    N, bs, G, D = 6, 4, 2, 8
    k_pool, v_pool = torch.zeros(N, bs, G, D, dtype=dtype), torch.zeros(N, bs, G, D, dtype=dtype)
    slots = torch.randperm(N * bs)[:6].view(2, 3)  # a (B, T) prefill chunk
    k, v = torch.randn(2, 3, G, D, dtype=dtype), torch.randn(2, 3, G, D, dtype=dtype)
    paged_store(k, v, k_pool, v_pool, slots)
    for b in range(2):
        for t in range(3):
            s = int(slots[b, t])
            assert torch.equal(k_pool[s // bs, s % bs], k[b, t]) and torch.equal(v_pool[s // bs, s % bs], v[b, t]), seed
    assert int((k_pool != 0).any(-1).any(-1).sum()) == 6  # nothing else written
    with pytest.raises(ValueError, match="takes no scales"):
        paged_store(k, v, k_pool, v_pool, slots, torch.zeros(N, bs, G), torch.zeros(N, bs, G))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rotary_store_ref_rotates_per_row_and_writes_flat_slots(dtype):
    seed = fresh_seed()
    B, H, G, D, R, N, bs = 3, 6, 2, 16, 12, 5, 4
    q = torch.randn(B, 1, H, D, dtype=dtype)
    k, v = torch.randn(B, 1, G, D, dtype=dtype), torch.randn(B, 1, G, D, dtype=dtype)
    angle = torch.randn(B, 1, R) * 50
    cos, sin = angle.cos().to(dtype), angle.sin().to(dtype)
    k_pool, v_pool = torch.randn(N, bs, G, D, dtype=dtype), torch.randn(N, bs, G, D, dtype=dtype)
    before = k_pool.clone(), v_pool.clone()
    slots = torch.randperm(N * bs)[:B]
    got = rotary_store(q, k, v, cos, sin, k_pool, v_pool, slots)
    for b in range(B):
        assert torch.equal(got[b], apply_rotary(q[b:b + 1], cos[b:b + 1], sin[b:b + 1])[0]), seed
        s = int(slots[b])
        assert torch.equal(k_pool[s // bs, s % bs], apply_rotary(k[b:b + 1], cos[b:b + 1], sin[b:b + 1])[0, 0])
        assert torch.equal(v_pool[s // bs, s % bs], v[b, 0])
    untouched = torch.ones(N * bs, dtype=torch.bool)
    untouched[slots] = False
    assert torch.equal(k_pool.view(-1, G, D)[untouched], before[0].view(-1, G, D)[untouched])
    assert torch.equal(v_pool.view(-1, G, D)[untouched], before[1].view(-1, G, D)[untouched])


# ----------------------------------------------------------------------------- fp8 K/V


def test_fp8_quantization_is_within_e4m3_precision():
    """scale = amax / 448 (to one rounding); each value within half an e4m3 step: 2**-4 relative for normal
    numbers (3 mantissa bits), 2**-10 * scale absolute below e4m3's smallest normal (2**-6)."""
    seed = fresh_seed()
    x = torch.randn(50, 4, 64) * torch.rand(50, 4, 1) * 10
    x[3, 1] = 0.0  # an all-zero vector
    x8, scale = quantize_kv_fp8(x)
    assert x8.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32 and scale.shape == (50, 4)
    amax = x.abs().amax(-1)
    assert torch.allclose(scale[amax > 0], amax[amax > 0] / FP8_MAX, rtol=2**-23) and scale[3, 1] == 1
    back = x8.float() * scale[..., None]
    bound = torch.maximum(x.abs() * 2**-4, scale[..., None] * 2**-10)
    assert ((back - x).abs() <= bound * (1 + 1e-6)).all(), seed
    assert torch.allclose(back.abs().amax(-1), amax, rtol=1e-6)  # the largest element: 448, an e4m3 value


def test_fp8_paged_store_and_rotary_store_write_scales():
    seed = fresh_seed()
    N, bs, G, D, B = 5, 4, 2, 16, 3
    pools = [torch.zeros(N, bs, G, D, dtype=torch.float8_e4m3fn) for _ in range(2)]
    pools[1] = tokens_contiguous(pools[1])  # V as the cache lays it out
    scales = [torch.zeros(N, bs, G) for _ in range(2)]
    slots = torch.randperm(N * bs)[:B]
    k, v = torch.randn(B, 1, G, D, dtype=torch.bfloat16), torch.randn(B, 1, G, D, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="takes scales"):
        paged_store(k, v, *pools, slots)
    paged_store(k, v, *pools, slots, *scales)
    for x, pool, scale in ((k, pools[0], scales[0]), (v, pools[1], scales[1])):
        x8, s = quantize_kv_fp8(x[:, 0])
        got = pool.view(torch.uint8)[slots // bs, slots % bs]
        assert torch.equal(got, x8.view(torch.uint8)) and torch.equal(scale.view(-1, G)[slots], s)
    q = torch.randn(B, 1, 4, D, dtype=torch.bfloat16)
    angle = torch.randn(B, 1, D)
    cos, sin = angle.cos().to(torch.bfloat16), angle.sin().to(torch.bfloat16)
    rotary_store_ref(q, k, v, cos, sin, *pools, slots, *scales)
    k8, ks = quantize_kv_fp8(apply_rotary(k, cos, sin)[:, 0])
    assert torch.equal(pools[0].view(-1, G, D)[slots].view(torch.uint8), k8.view(torch.uint8)), seed
    assert torch.equal(scales[0].view(-1, G)[slots], ks)


def fp8_pools(k_pool, v_pool):
    """Quantize whole pools as paged_store would have written them, V in the cache's layout (a
    block's tokens contiguous)."""
    (k8, ks), (v8, vs) = quantize_kv_fp8(k_pool), quantize_kv_fp8(v_pool)
    return k8, tokens_contiguous(v8), ks, vs


def test_fp8_kernel_reads_either_v_layout(splits):
    """The decode kernel addresses V by its strides: the cache's tokens-contiguous float8 V pool
    and a plain one give the same output, bit for bit; the pool keeps its shape and values."""
    from layers.attention_triton import paged_attention_triton

    seed = fresh_seed()
    lengths = (1, 16, 17, 100)
    k_pool, v_pool, table = random_paged(len(lengths), lengths, 16, 2, 32)
    k8, v8, ks, vs = fp8_pools(k_pool, v_pool)
    plain = v8.contiguous()
    assert v8.shape == plain.shape and v8.stride(1) == 1 and torch.equal(v8.view(torch.uint8), plain.view(torch.uint8))
    q, q_pos = torch.randn(len(lengths), 1, 4, 32), torch.tensor(lengths) - 1
    a = paged_attention_triton(*to_dev(q, k8, v8, table, q_pos), None, None, *to_dev(ks, vs))
    b = paged_attention_triton(*to_dev(q, k8, plain, table, q_pos), None, None, *to_dev(ks, vs))
    assert torch.equal(a, b), seed


def fp8_tolerance(k_pool, v_pool, k8, v8, ks, vs):
    """(mean, max) bounds on the relative error of fp8 attention outputs per (row, head), from
    the pools' own quantization error e = ||dequant - x|| / ||x|| (about 2.5% for Gaussian data:
    e4m3 rounds to 3 mantissa bits, <= 2**-4 relative per element, ~2**-4 / sqrt(3) RMS). The
    output mixes V rows, so V's error passes through at about e; K's error moves the logits by
    about e of their size, which changes the softmax weights by about as much again,
    independently: about sqrt(2) e in all, 2 e on average bounds it, and 3 e bounds a single
    (row, head) (measured: mean 1.3 e, max 2.1 e over seeds)."""
    e = max(((k8.float() * ks[..., None] - k_pool).norm() / k_pool.norm()).item(),
            ((v8.float() * vs[..., None] - v_pool).norm() / v_pool.norm()).item())
    assert e < 0.03  # the quantization itself is as precise as e4m3 allows
    return 2 * e, 3 * e


def relative_errors(got, want):
    """Relative error of each (row, head) output vector."""
    return (got.double() - want.double()).norm(dim=-1) / want.double().norm(dim=-1)


def test_fp8_paged_attention_reference_dequantizes_then_attends():
    """The fp8 reference equals the fp32 reference on the dequantized pools, and stays within
    e4m3's precision of the unquantized one (see :func:`fp8_tolerance`)."""
    seed = fresh_seed()
    lengths, bs = (1, 17, 64, 200), 16
    B, Hq, Hk, D = len(lengths), 8, 2, 64
    k_pool, v_pool, table = random_paged(B, lengths, bs, Hk, D)
    k8, v8, ks, vs = fp8_pools(k_pool, v_pool)
    q = torch.randn(B, 1, Hq, D)
    q_pos = torch.tensor(lengths) - 1
    got = paged_attention_ref(q, k8, v8, table, q_pos, k_scale=ks, v_scale=vs)
    deq = paged_attention_ref(q, k8.float() * ks[..., None], v8.float() * vs[..., None], table, q_pos)
    assert torch.allclose(got, deq, atol=1e-6), seed
    full = paged_attention_ref(q, k_pool, v_pool, table, q_pos)
    err, mean_tol, max_tol = relative_errors(got, full), *fp8_tolerance(k_pool, v_pool, k8, v8, ks, vs)
    assert err.mean() < mean_tol and err.max() < max_tol, (seed, err.mean(), err.max(), mean_tol)
    core = DiffAttnCore(D, layer_idx=3)
    for p in (core.lambda_q1, core.lambda_k1, core.lambda_q2, core.lambda_k2):
        torch.nn.init.normal_(p, std=0.1)
    with torch.no_grad():
        got = core.forward_paged(q, k8, v8, table, q_pos, ks, vs)
        deq = core.forward_paged(q, k8.float() * ks[..., None], v8.float() * vs[..., None], table, q_pos)
    assert torch.allclose(got, deq, atol=1e-5), seed


# ----------------------------------------------------------------------------- Triton kernels (interpreter on CPU)

DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_dev(*xs):
    return [x.to(DEV) if x is not None else None for x in xs]


@pytest.fixture
def splits(monkeypatch):
    """Force the decode kernels' number of splits (None: the kernel's own choice)."""
    import layers.attention_triton as at

    def force(n):
        if n is not None:
            monkeypatch.setattr(at, "num_splits", lambda *args, **kw: n)
    return force


def test_num_splits_fills_the_gpu_and_bounds_each_programs_walk():
    from layers.attention_triton import num_splits

    assert num_splits(1, 8, 34816) == 64  # batch 1: split finely (latency-bound)
    assert num_splits(1, 8, 64) == 1  # one block: one split
    assert num_splits(256, 8, 2048) == 1  # many rows of short caches fill the GPU as they are
    for batch, heads, slots in ((83, 8, 34816), (256, 20, 34816), (512, 8, 131072)):
        n = num_splits(batch, heads, slots)  # mixed lengths: no program walks more than 8192 slots
        assert n & (n - 1) == 0 and slots / n <= 8192 and n <= 64


@pytest.mark.parametrize("page, lengths, Hq, Hk, window, forced", [
    (16, (1, 16, 17, 65, 130, 300), 4, 2, None, None),  # rows cross pages, 64-key tiles and splits
    (128, (1, 127, 129, 300), 2, 1, None, 16),          # a page wider than a tile; many empty splits
    (16, (40, 3, 200, 64), 4, 4, 50, None),             # window: the blocks before it are not read
    (8, (1, 2, 9, 100), 2, 1, None, 32),                # 32 splits over rows of a few keys, MQA
])
@pytest.mark.parametrize("fp8", [False, True], ids=["fp32", "fp8"])
def test_paged_kernel_matches_reference(page, lengths, Hq, Hk, window, forced, fp8, splits):
    from layers.attention_triton import paged_attention_triton

    seed = fresh_seed()
    splits(forced)
    B, D = len(lengths) + 1, 32
    k_pool, v_pool, table = random_paged(B - 1, lengths, page, Hk, D)
    table = torch.cat([table, table[:1]])  # the last row is a batch's unused row: q_pos -1
    if window is not None:
        for b, n in enumerate(lengths):
            table[b, :max(0, n - window) // page] = 10**6  # stale entries before the window
    q_pos = torch.tensor([*lengths, 0]) - 1
    q = torch.randn(B, 1, Hq, D)
    ks = vs = None
    if fp8:
        k_pool, v_pool, ks, vs = fp8_pools(k_pool, v_pool)
    want = paged_attention_ref(q, k_pool, v_pool, table, q_pos, window, 0.2, ks, vs)
    got = paged_attention_triton(*to_dev(q, k_pool, v_pool, table, q_pos), window, 0.2, *to_dev(ks, vs))
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.equal(got[-1].cpu(), torch.zeros_like(got[-1].cpu()))
    assert torch.allclose(got.cpu(), want, atol=2e-5), (seed, (got.cpu() - want).abs().max())


@pytest.mark.parametrize("ring", [False, True])
def test_decode_kernel_takes_per_row_positions(ring, splits):
    """The static-buffer kernel with each row at its own position, and (ring) its own slot positions."""
    from layers.attention_triton import decode_attention_triton

    seed = fresh_seed()
    B, S, Hq, Hk, D = 4, 150, 4, 2, 32
    q, k, v = torch.randn(B, 1, Hq, D), torch.randn(B, S, Hk, D), torch.randn(B, S, Hk, D)
    q_pos = torch.tensor([0, 63, 149, 100]) + (400 if ring else 0)
    k_pos = None
    if ring:  # slot s of row b holds the newest position congruent to s; row 2's last 10 slots are empty
        k_pos = q_pos[:, None] - (q_pos[:, None] - torch.arange(S)) % S
        k_pos[2, -10:] = -1
    window = S if ring else None
    want = attention_ref(q, k, v, q_pos[:, None], k_pos, window=window)
    got = decode_attention_triton(*to_dev(q, k, v, q_pos, k_pos), None, window)
    assert torch.allclose(got.cpu(), want, atol=2e-5), seed
    got2 = decode_attention_triton(*to_dev(q, k, v, q_pos[:, None], k_pos), None, window)  # (B, 1) positions
    assert torch.equal(got2, got)


def diff_core(D, dtype=torch.float32, device="cpu"):
    core = DiffAttnCore(D, layer_idx=5)
    for p in (core.lambda_q1, core.lambda_k1, core.lambda_q2, core.lambda_k2):
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.normal_(core.subln.weight)
    return core.to(device, dtype)


@pytest.mark.parametrize("page, lengths, forced", [(16, (1, 17, 64, 65, 250), None), (64, (300, 2), 32)])
@pytest.mark.parametrize("fp8", [False, True], ids=["fp32", "fp8"])
def test_paged_differential_kernel_matches_forward_paged(page, lengths, forced, fp8, splits):
    from layers.attention_triton import paged_diff_attention_triton

    seed = fresh_seed()
    splits(forced)
    H, G, D = 8, 4, 16
    core = diff_core(D)
    B = len(lengths)
    k_pool, v_pool, table = random_paged(B, lengths, page, G, D)
    ks = vs = None
    if fp8:
        k_pool, v_pool, ks, vs = fp8_pools(k_pool, v_pool)
    q = torch.randn(B, 1, H, D)
    q_pos = torch.tensor(lengths) - 1
    with torch.no_grad():
        want = core.forward_paged(q, k_pool, v_pool, table, q_pos, ks, vs)
        c = core.to(DEV)
        got = paged_diff_attention_triton(*to_dev(q, k_pool, v_pool, table, q_pos, ks, vs), c.lambda_q1, c.lambda_k1,
                                          c.lambda_q2, c.lambda_k2, c.lambda_init, c.subln.weight, c.subln.eps)
    assert got.shape == want.shape == (B, 1, H * D)
    assert torch.allclose(got.cpu(), want, atol=2e-5), (seed, (got.cpu() - want).abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("v_scale", [1.0, 1e-3])
@pytest.mark.parametrize("diff", [False, True], ids=["gqa", "pair heads"])
def test_fp8_kernel_keeps_small_probabilities_of_long_rows(dtype, v_scale, diff):
    """16-bit queries over float8 pools: the kernel's P @ V runs in f16, where probabilities of a
    4096-key row times the scales of small values (V ~ 1e-3) fall below f16's normal range; each
    row of them is scaled up before the product (unscaled: 2-9% off and biased low)."""
    from layers.attention_triton import paged_attention_triton, paged_diff_attention_triton

    seed = fresh_seed()
    L, page, G, D = 4096, 64, 2, 64
    k_pool, v_pool, table = random_paged(1, (L,), page, G, D)
    k_pool, v_pool, ks, vs = fp8_pools(k_pool, v_pool * v_scale + 0.3 * v_scale)  # a mean: outputs not ~0
    q = torch.randn(1, 1, 4, D).to(dtype).float()  # the reference reads the queries the kernel reads
    q_pos = torch.tensor([L - 1])
    with torch.no_grad():
        if diff:
            core = diff_core(D)
            want = core.forward_paged(q, k_pool, v_pool, table, q_pos, ks, vs).double()
            c = core.to(DEV, dtype)
            got = paged_diff_attention_triton(*to_dev(q.to(dtype), k_pool, v_pool, table, q_pos, ks, vs),
                                              c.lambda_q1, c.lambda_k1, c.lambda_q2, c.lambda_k2, c.lambda_init,
                                              c.subln.weight, c.subln.eps)
        else:
            want = paged_attention_ref(q, k_pool, v_pool, table, q_pos, None, None, ks, vs).double()
            got = paged_attention_triton(*to_dev(q.to(dtype), k_pool, v_pool, table, q_pos), None, None,
                                         *to_dev(ks, vs))
    # f16 (measured 2.4e-4 / 1.9e-3 with pair heads; unscaled at V ~ 1e-3: 1.4-2.1e-3 / 4-9e-3);
    # bf16 is bounded by its own output rounding (and, with pair heads, by the epilogue's)
    tol = {torch.float16: 3e-3 if diff else 6e-4, torch.bfloat16: 3e-2 if diff else 6e-3}[dtype]
    assert rel(got.cpu().double(), want) < tol, seed


def test_differential_decode_kernel_takes_per_row_positions():
    from layers.attention_triton import decode_diff_attention_triton

    seed = fresh_seed()
    B, S, H, G, D = 3, 100, 8, 4, 16
    core = diff_core(D)
    q, k, v = torch.randn(B, 1, H, D), torch.randn(B, S, G, D), torch.randn(B, S, G, D)
    q_pos = torch.tensor([5, 99, 64])
    with torch.no_grad():
        want = core(q, k, v, q_pos[:, None])
        c = core.to(DEV)
        got = decode_diff_attention_triton(*to_dev(q, k, v, q_pos), None, None, None, c.lambda_q1, c.lambda_k1,
                                           c.lambda_q2, c.lambda_k2, c.lambda_init, c.subln.weight, c.subln.eps)
    assert torch.allclose(got.cpu(), want, atol=2e-5), seed


@pytest.mark.parametrize("fp8", [False, True], ids=["fp32", "fp8"])
def test_rotary_store_kernel_writes_flat_slots(fp8):
    """Rotated q, and k, v at each row's slot, bit for bit the reference's (fp8: the same bytes and scales)."""
    from layers.rope_triton import rotary_store_triton

    seed = fresh_seed()
    B, H, G, D, R, N, bs = 3, 6, 2, 32, 24, 5, 4
    q, k, v = torch.randn(B, 1, H, D), torch.randn(B, 1, G, D) * 5, torch.randn(B, 1, G, D)
    k[1, 0, 1] = 0.0  # an all-zero head: scale 1
    angle = torch.randn(B, 1, R) * 50
    cos, sin = angle.cos(), angle.sin()
    if fp8:  # V as the cache lays it out
        pools = [torch.randn(N, bs, G, D).to(torch.float8_e4m3fn) for _ in range(2)]
        pools[1] = tokens_contiguous(pools[1])
        pools += [torch.rand(N, bs, G) for _ in range(2)]
    else:
        pools = [torch.randn(N, bs, G, D) for _ in range(2)] + [None, None]
    slots = torch.randperm(N * bs)[:B]
    ref_pools = [p.clone() if p is not None else None for p in pools]
    want = rotary_store_ref(q, k, v, cos, sin, ref_pools[0], ref_pools[1], slots, *ref_pools[2:])
    dev_pools = to_dev(*pools)
    got = rotary_store_triton(*to_dev(q, k, v, cos, sin), dev_pools[0], dev_pools[1], slots.to(DEV), *dev_pools[2:])
    assert torch.equal(got.cpu(), want), seed
    for d, r in zip(dev_pools, ref_pools):
        if r is not None:
            bits = (lambda t: t.view(torch.uint8)) if r.dtype == torch.float8_e4m3fn else (lambda t: t)
            assert torch.equal(bits(d.cpu()), bits(r)), seed


@triton.jit
def _round_e4m3_kernel(X, Y, N: tl.constexpr):
    i = tl.arange(0, N)
    tl.store(Y + i, _round_e4m3(tl.load(X + i)).to(Y.dtype.element_ty))


def test_kernel_rounding_to_e4m3_is_torchs():
    """The cache-write kernel rounds to e4m3 itself (ties to even, signed zeros): every e4m3 value,
    every midpoint between two (the ties), and random values, as torch's cast rounds them."""
    seed = fresh_seed()
    e4m3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
    e4m3 = torch.sort(e4m3[torch.isfinite(e4m3)]).values
    x = torch.cat([e4m3, (e4m3[1:] + e4m3[:-1]) / 2, torch.tensor([-0.0]), torch.randn(3000) * 50,
                   torch.randn(3000) * 0.01, torch.rand(2000) * 2**-6]).clamp(-448, 448)
    x = torch.cat([x, torch.zeros(triton.next_power_of_2(len(x)) - len(x))]).to(DEV)
    y = torch.empty(len(x), dtype=torch.float8_e4m3fn, device=DEV)
    _round_e4m3_kernel[(1,)](x, y, N=len(x))
    assert torch.equal(y.view(torch.uint8).cpu(), x.cpu().to(torch.float8_e4m3fn).view(torch.uint8)), seed


# ----------------------------------------------------------------------------- on the GPU (bf16 and fp32)

CUDA = torch.device("cuda")


def gpu_paged(lengths, page, Hk, D, dtype, fp8):
    """Random pools on the GPU, shuffled blocks, stale table entries past each row's blocks."""
    k_pool, v_pool, table = random_paged(len(lengths), lengths, page, Hk, D)
    ks = vs = None
    if fp8:
        k_pool, v_pool, ks, vs = fp8_pools(k_pool, v_pool)
    else:
        k_pool, v_pool = k_pool.to(dtype), v_pool.to(dtype)
    return [x.to(CUDA) if x is not None else None for x in (k_pool, v_pool, table, ks, vs)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fp8", [False, True], ids=["kv16", "kv8"])
@pytest.mark.parametrize("B, Hq, Hk, D, page, max_len, window", [
    (6, 24, 8, 128, 16, 5000, None),   # dense Phi-4-mini heads, rows of very different lengths
    (5, 24, 8, 128, 128, 3000, None),  # pages wider than the kernel's 64-key tiles
    (4, 24, 8, 128, 16, 3000, 1000),   # window
    (96, 8, 2, 64, 16, 700, None),     # wide batch: 128-key tiles, few splits
])
def test_paged_attention_kernel_on_gpu(dtype, fp8, B, Hq, Hk, D, page, max_len, window):
    from layers.attention_triton import paged_attention_triton

    seed = fresh_seed()
    lengths = [1, page, page + 1, max_len] + torch.randint(1, max_len, (B - 4,)).tolist()
    k_pool, v_pool, table, ks, vs = gpu_paged(lengths, page, Hk, D, dtype, fp8)
    q = torch.randn(B, 1, Hq, D, device=CUDA, dtype=dtype)
    q_pos = torch.tensor(lengths, device=CUDA) - 1
    q_pos[-1] = -1  # an unused row
    got = paged_attention_triton(q, k_pool, v_pool, table, q_pos, window, None, ks, vs)
    d = (lambda t: t) if fp8 else (lambda t: t.double())
    ref = paged_attention_ref(q.double(), d(k_pool), d(v_pool), table, q_pos, window, None, ks, vs)
    assert torch.equal(got[-1], torch.zeros_like(got[-1]))
    assert rel(got[:-1], ref[:-1]) < (1e-5 if dtype == torch.float32 else 1e-2), seed


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fp8", [False, True], ids=["kv16", "kv8"])
@pytest.mark.parametrize("B, max_len", [(1, 4100), (5, 2100), (40, 600)])
def test_paged_differential_attention_on_gpu(dtype, fp8, B, max_len):
    """SambaY's layer 17 / cross-attention decode through the block table, against
    ``forward_paged``'s reference: in bf16 about as far from float64 as the reference itself."""
    seed = fresh_seed()
    H, G, D, page = 40, 20, 64, 16  # SambaY's heads
    core = diff_core(D, dtype, CUDA)
    lengths = ([max_len] + torch.randint(1, max_len, (B - 1,)).tolist()) if B > 1 else [max_len]
    k_pool, v_pool, table, ks, vs = gpu_paged(lengths, page, G, D, dtype, fp8)
    q = torch.randn(B, 1, H, D, device=CUDA, dtype=dtype)
    q_pos = torch.tensor(lengths, device=CUDA) - 1
    backends._announced.clear()
    with torch.no_grad():
        out = core.forward_paged(q, k_pool, v_pool, table, q_pos, ks, vs)
        assert ("paged differential attention decode", "triton") in backends._announced
        with backends.use(attention="ref"):
            same = core.forward_paged(q, k_pool, v_pool, table, q_pos, ks, vs)
            d = (lambda t: t) if fp8 else (lambda t: t.double())
            exact = copy.deepcopy(core).double().forward_paged(q.double(), d(k_pool), d(v_pool), table, q_pos, ks, vs)
    assert out.shape == (B, 1, H * D) and out.dtype == dtype
    if dtype == torch.float32:
        assert rel(out, exact) < 1e-5, seed
    else:
        assert rel(out, exact) < 1.5 * rel(same, exact) + 2e-3, seed


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_paged_attention_is_within_e4m3_precision_on_gpu(dtype):
    seed = fresh_seed()
    lengths, page, Hk, D = [1, 17, 300, 2000, 4100], 16, 8, 128
    k_pool, v_pool, table = random_paged(len(lengths), lengths, page, Hk, D)
    k8, v8, ks, vs = (x.to(CUDA) for x in fp8_pools(k_pool, v_pool))
    q = torch.randn(len(lengths), 1, 24, D, device=CUDA, dtype=dtype)
    q_pos = torch.tensor(lengths, device=CUDA) - 1
    table = table.to(CUDA)
    with torch.no_grad():
        got = paged_attend(q, k8, v8, table, q_pos, k_scale=ks, v_scale=vs)
        full = paged_attention_ref(q.double(), k_pool.double().to(CUDA), v_pool.double().to(CUDA), table, q_pos)
    mean_tol, max_tol = fp8_tolerance(k_pool, v_pool, k8.cpu(), v8.cpu(), ks.cpu(), vs.cpu())
    err = relative_errors(got, full)
    assert err.mean() < mean_tol and err.max() < max_tol + (1e-2 if dtype == torch.bfloat16 else 0), seed


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fp8", [False, True], ids=["kv16", "kv8"])
def test_rotary_store_kernel_on_gpu_equals_reference(dtype, fp8):
    """Per-row positions, flat slots of a paged pool: the same bits as the reference (fp8: bytes and scales)."""
    from layers.rope_triton import rotary_store_triton

    seed = fresh_seed()
    B, H, G, D, R, N, bs = 7, 24, 8, 128, 96, 40, 16  # dense Phi-4-mini heads, partial rotary
    qkv = torch.randn(B, 1, (H + 2 * G) * D, device=CUDA, dtype=dtype) * 3
    q, k, v = qkv.split([H * D, G * D, G * D], dim=-1)
    q, k, v = q.view(B, 1, H, D), k.view(B, 1, G, D), v.view(B, 1, G, D)
    angle = torch.randn(B, 1, R, device=CUDA) * 100
    cos, sin = angle.cos().to(dtype), angle.sin().to(dtype)
    pdt = torch.float8_e4m3fn if fp8 else dtype
    pools = [torch.randn(N, bs, G, D, device=CUDA).to(pdt) for _ in range(2)]
    pools += [torch.rand(N, bs, G, device=CUDA) for _ in range(2)] if fp8 else [None, None]
    copies = [p.clone() if p is not None else None for p in pools]
    slots = torch.randperm(N * bs, device=CUDA)[:B]
    want = rotary_store_ref(q, k, v, cos, sin, pools[0], pools[1], slots, *pools[2:])
    got = rotary_store_triton(q, k, v, cos, sin, copies[0], copies[1], slots, *copies[2:])
    assert torch.equal(got, want), seed
    for a, b in zip(copies, pools):
        if b is not None:
            assert torch.equal(a.view(torch.uint8) if fp8 and a.dim() == 4 else a,
                               b.view(torch.uint8) if fp8 and b.dim() == 4 else b), seed


@pytest.mark.gpu
def test_paged_decode_replays_in_a_cuda_graph():
    """Static shapes, positions and block tables on the device: one captured graph serves steps
    with new positions, new blocks and rows joining and leaving."""
    seed = fresh_seed()
    B, Hq, Hk, D, page, M = 4, 24, 8, 128, 16, 64
    k_pool = torch.randn(300, page, Hk, D, device=CUDA, dtype=torch.bfloat16)
    v_pool = torch.randn_like(k_pool)
    table = torch.randperm(300, device=CUDA)[:B * M].view(B, M).int()
    q = torch.randn(B, 1, Hq, D, device=CUDA, dtype=torch.bfloat16)
    q_pos = torch.tensor([5, 100, 900, -1], device=CUDA)
    with torch.no_grad():
        paged_attend(q, k_pool, v_pool, table, q_pos)  # compile outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = paged_attend(q, k_pool, v_pool, table, q_pos)
        for step in range(3):
            q.copy_(torch.randn_like(q))
            q_pos.copy_(torch.randint(-1, M * page, (B,), device=CUDA))
            q_pos[0] = M * page - 1 - step  # one row near the end of its table
            table.copy_(torch.randperm(300, device=CUDA)[:B * M].view(B, M).int())
            graph.replay()
            want = paged_attention_ref(q, k_pool, v_pool, table, q_pos)
            assert rel(out[q_pos >= 0], want[q_pos >= 0]) < 1e-2, (seed, step)
            assert not out[q_pos < 0].any(), (seed, step)
