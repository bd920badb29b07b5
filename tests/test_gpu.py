"""Fast GPU paths against the plain-PyTorch references, on random inputs with fresh seeds.

Run on a CUDA machine (skipped elsewhere). Sizes cross the decode kernel's blocks (64 slots),
its splits, the sliding window, and mamba-ssm's 2048-step scan chunks.
"""

import pytest
import torch

from helpers import cached_logits, fresh_seed, rel, small_models
import layers.backends as backends
from layers.attention import attention_ref, attention_sdpa
from layers.mamba import KERNELS
from sambay.generate import Engine, Request, SamplingParams

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


# ----------------------------------------------------------------------------- linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N, K, bias, glu", [
    (2560, 5120, False, False),   # official shapes: even tiles
    (10240, 2560, False, True),   # MLP fc1 with the fused gate
    (5120, 160, True, False),     # dt_proj: K under one tile
    (1001, 2500, True, False),    # rows and columns off the tiles
    (77, 300, True, True),        # small, ragged, fused gate
])
def test_gemv_matches_linear(dtype, N, K, bias, glu):
    import torch.nn.functional as F

    from layers.gemv_triton import gemv

    seed = fresh_seed()
    w = torch.randn(2 * N if glu else N, K, device=CUDA, dtype=dtype) * 0.05
    b = torch.randn(w.shape[0], device=CUDA, dtype=dtype) if bias else None
    x = torch.randn(1, 1, K, device=CUDA, dtype=dtype)
    ref = F.linear(x.double(), w.double(), b.double() if bias else None)
    if glu:
        g, u = ref.chunk(2, -1)
        ref = u * F.silu(g)
    out = gemv(x, w, b, glu=glu)
    assert out.shape == ref.shape and out.dtype == dtype
    assert rel(out, ref) < (1e-5 if dtype == torch.float32 else 1e-2), f"seed {seed}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm_kind", [None, "layer", "rms"])
@pytest.mark.parametrize("N, K, bias, glu, gated", [
    (2560, 2560, True, False, False),    # official square projection
    (10240, 2560, False, True, False),   # MLP fc1: norm prologue + fused gate
    (5120, 2560, False, False, True),    # GMU in_proj: norm prologue + silu gate
    (1001, 2500, True, False, True),     # rows and columns off the tiles
])
@pytest.mark.parametrize("residual_dtype", [None, torch.float32, "same"])
def test_fused_gemv_matches_the_unfused_block(dtype, norm_kind, N, K, bias, glu, gated, residual_dtype):
    """norm -> linear -> (glu | silu gate) -> residual add in one kernel, against the same steps
    in float64. In bf16 the fused kernel's error must stay near torch's own bf16 composition's."""
    import copy

    from torch import nn

    from layers.linear import linear, linear_ref
    from layers.norm import RMSNorm

    seed = fresh_seed()
    w = torch.randn(2 * N if glu else N, K, device=CUDA, dtype=dtype) * 0.05
    b = torch.randn(w.shape[0], device=CUDA, dtype=dtype) if bias else None
    norm = None
    if norm_kind == "layer":
        norm = nn.LayerNorm(K, device=CUDA, dtype=dtype)
        nn.init.normal_(norm.bias)
    elif norm_kind == "rms":
        norm = RMSNorm(K).to(CUDA, dtype)
    if norm is not None:
        nn.init.normal_(norm.weight)
    x = (torch.randn(1, 1, K, device=CUDA) * 3 + 1).to(torch.float32 if norm is not None else dtype)
    gate = torch.randn(1, 1, N, device=CUDA, dtype=dtype) if gated else None
    rdt = dtype if residual_dtype == "same" else residual_dtype
    res = torch.randn(1, 1, N, device=CUDA, dtype=rdt) if rdt is not None else None
    backends._announced.clear()
    with torch.no_grad():
        out = linear(x, w, b, glu=glu, norm=norm, gate=gate, residual=res)
        same = linear_ref(x, w, b, glu=glu, norm=norm, gate=gate, residual=res)
        d = lambda t: t.double() if t is not None else None  # noqa: E731
        exact = linear_ref(d(x), d(w), d(b), glu=glu, norm=copy.deepcopy(norm).double() if norm else None,
                           gate=d(gate), residual=d(res))
    assert ("linear (one row)", "triton gemv") in backends._announced
    assert out.shape == same.shape and out.dtype == same.dtype
    if dtype == torch.float32:
        assert rel(out, exact) < 1e-5, f"seed {seed}"
    else:
        assert rel(out, exact) < 1.5 * rel(same, exact) + 1e-3, f"seed {seed}"


def test_linear_takes_the_gemv_only_for_one_row_inference():
    from torch import nn

    from layers.linear import linear

    w = torch.randn(300, 256, device=CUDA)
    x = torch.randn(1, 1, 256, device=CUDA)
    with torch.no_grad():
        backends._announced.clear()
        assert torch.allclose(linear(x, w), x @ w.T, atol=1e-4)
        assert ("linear (one row)", "triton gemv") in backends._announced
        backends._announced.clear()
        with backends.use(linear="torch"):
            assert torch.allclose(linear(x, w), x @ w.T, atol=1e-4)
        # what the kernel does not fuse goes the unfused way: a norm without weights, a
        # residual that would broadcast or promote differently
        plain_ln = nn.LayerNorm(256, elementwise_affine=False, device=CUDA)
        want = plain_ln(x) @ w.T
        assert torch.allclose(linear(x, w, norm=plain_ln), want, atol=1e-4)
        res = torch.randn(2, 1, 300, device=CUDA, dtype=torch.float64)
        assert linear(x, w, residual=res).shape == (2, 1, 300) and linear(x, w, residual=res).dtype == torch.float64
        assert ("linear (one row)", "triton gemv") not in backends._announced
    w.requires_grad_(True)
    linear(x, w).sum().backward()  # with autograd it is torch's path, which has a backward
    assert w.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B, per_row_cos", [(1, False), (3, True), (3, False)])
def test_rotary_store_kernel_equals_reference(dtype, B, per_row_cos):
    """RoPE on q and k plus the cache write of one token: the same bits as the unfused ops."""
    from layers.rope import rotary_store_ref
    from layers.rope_triton import rotary_store_triton

    seed = fresh_seed()
    H, G, D, R, S = 24, 8, 128, 96, 50  # dense Phi-4-mini heads, partial rotary
    qkv = torch.randn(B, 1, (H + 2 * G) * D, device=CUDA, dtype=dtype)
    q, k, v = qkv.split([H * D, G * D, G * D], dim=-1)
    q, k, v = q.view(B, 1, H, D), k.view(B, 1, G, D), v.view(B, 1, G, D)
    angle = torch.randn(B if per_row_cos else 1, 1, R, device=CUDA) * 100
    cos, sin = angle.cos().to(dtype), angle.sin().to(dtype)
    caches = [torch.randn(B, S, G, D, device=CUDA, dtype=dtype) for _ in range(2)]
    copies = [c.clone() for c in caches]
    slots = torch.arange(B, device=CUDA) * S + int(torch.randint(0, S, ()))  # the caches as pools of B blocks
    want = rotary_store_ref(q, k, v, cos, sin, *caches, slots)
    got = rotary_store_triton(q, k, v, cos, sin, *copies, slots)
    assert torch.equal(got, want), f"seed {seed}"
    assert torch.equal(copies[0], caches[0]) and torch.equal(copies[1], caches[1]), f"seed {seed}"


# ----------------------------------------------------------------------------- attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B, S, Hq, Hk, DK, DV, ring, window, padded", [
    (2, 4100, 40, 10, 128, 128, False, None, False),   # SambaY pair heads, long cache
    (3, 1000, 24, 8, 128, 128, False, None, True),     # dense baseline shape, padded rows
    (2, 512, 40, 10, 128, 128, True, 512, True),       # sliding ring
    (1, 37, 4, 1, 32, 32, True, 37, False),            # tiny ring
    (64, 300, 8, 2, 64, 64, False, None, False),       # wide batch
    (40, 36864, 40, 10, 128, 128, False, None, False), # row offsets beyond 2**31 elements
])
def test_decode_attention_kernel_matches_reference(dtype, B, S, Hq, Hk, DK, DV, ring, window, padded):
    from layers.attention_triton import decode_attention_triton

    seed = fresh_seed()
    positions = (0, 63, 64, S - 1, S + 700 if ring else S // 2 + 1) if B * S < 10**6 else (S - 1,)
    for pos in positions:
        q = torch.randn(B, 1, Hq, DK, device=CUDA, dtype=dtype)
        k = torch.randn(B, S, Hk, DK, device=CUDA, dtype=dtype)
        v = torch.randn(B, S, Hk, DV, device=CUDA, dtype=dtype)
        q_pos = torch.tensor([pos], device=CUDA)
        k_pos = pos - (pos - torch.arange(S, device=CUDA)) % S if ring else None
        start = torch.randint(0, min(pos, 50) + 1, (B,), device=CUDA) if padded else None
        got = decode_attention_triton(q, k, v, q_pos, k_pos, start, window, DK**-0.5)
        rows = slice(None) if len(positions) > 1 else slice(-2, None)  # huge case: the last rows
        got = got[rows]
        ref = attention_ref(q[rows].double(), k[rows].double(), v[rows].double(), q_pos, k_pos,
                            None if start is None else start[rows], window, DK**-0.5)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        assert rel(got, ref) < tol, (seed, pos)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B, S, window, ring, padded", [
    (1, 2100, None, False, False),  # cross-attention over a long shared cache, many splits
    (3, 700, 512, True, False),     # sliding window over a ring buffer
    (2, 300, None, False, True),    # left padding
])
def test_fused_differential_decode_matches_reference(dtype, B, S, window, ring, padded):
    """Differential attention of one token in two launches (block-diagonal queries built as they
    load; lambda, difference and sub-layer norm in the merge) against DiffAttnCore's reference."""
    import copy

    from layers.attention import DiffAttnCore

    seed = fresh_seed()
    H, G, D = 40, 20, 64  # SambaY's heads
    core = DiffAttnCore(D, layer_idx=5).to(CUDA, dtype)
    for p in (core.lambda_q1, core.lambda_k1, core.lambda_q2, core.lambda_k2):
        torch.nn.init.normal_(p, std=0.1)
    torch.nn.init.normal_(core.subln.weight)
    q = torch.randn(B, 1, H, D, device=CUDA, dtype=dtype)
    k, v = (torch.randn(B, S, G, D, device=CUDA, dtype=dtype) for _ in range(2))
    q_pos = torch.tensor([S - 1 if not ring else 3 * S + 11], device=CUDA)
    k_pos = None
    if ring:  # slot s holds the position congruent to s, the newest S of them
        slots = torch.arange(S, device=CUDA)
        k_pos = q_pos - (q_pos - slots) % S
    start = torch.tensor([0, 37], device=CUDA)[:B] if padded else None
    backends._announced.clear()
    with torch.no_grad():
        with backends.use(attention="sdpa"):
            out = core(q, k, v, q_pos, k_pos, start, window)
        assert ("differential attention decode", "triton") in backends._announced
        with backends.use(attention="ref"):
            same = core(q, k, v, q_pos, k_pos, start, window)
            exact = copy.deepcopy(core).double()(q.double(), k.double(), v.double(), q_pos, k_pos, start, window)
    assert out.shape == same.shape == (B, 1, H * D) and out.dtype == dtype
    if dtype == torch.float32:
        assert rel(out, exact) < 1e-5, f"seed {seed}"
    else:
        assert rel(out, exact) < 1.5 * rel(same, exact) + 2e-3, f"seed {seed}"


@pytest.mark.parametrize("T, S, q0, window, padded", [
    (700, 700, 0, None, False), (700, 700, 0, 64, True), (300, 1000, 700, None, True),
    (1500, 1500 + 64, 64, 64, False), (5, 2000, 1995, None, False),
])
def test_sdpa_prefill_matches_reference(T, S, q0, window, padded):
    seed = fresh_seed()
    q = torch.randn(2, T, 8, 128, device=CUDA, dtype=torch.bfloat16)
    k = torch.randn(2, S, 2, 128, device=CUDA, dtype=torch.bfloat16)
    v = torch.randn(2, S, 2, 128, device=CUDA, dtype=torch.bfloat16)
    q_pos = torch.arange(q0, q0 + T, device=CUDA)
    k_pos = torch.arange(q0 + T - S, q0 + T, device=CUDA)
    start = torch.tensor([0, 37], device=CUDA) if padded else None
    ref = attention_ref(q.double(), k.double(), v.double(), q_pos, k_pos, start, window)
    got = attention_sdpa(q, k, v, q_pos, k_pos, start, window, block=256)
    assert rel(got, ref) < 1e-2, seed


def test_sdpa_prefill_uses_flash_or_memory_efficient_kernels_only():
    """cuDNN's attention builds a graph for every new shape (hundreds of ms: a server's prefills
    rarely repeat one) and the math backend materializes the scores: neither may run a prefill."""
    q = torch.randn(3, 37, 8, 128, device=CUDA, dtype=torch.bfloat16)
    k = torch.randn(3, 37, 2, 128, device=CUDA, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    pos = torch.arange(37, device=CUDA)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        attention_sdpa(q, k, v, pos)  # plain causal
        attention_sdpa(q, k, v, pos, pos, None, 16)  # sliding window: masked query blocks
    used = {e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")}
    assert used and used <= {"aten::_scaled_dot_product_flash_attention",
                             "aten::_scaled_dot_product_efficient_attention"}, used


# ----------------------------------------------------------------------------- Mamba


@pytest.mark.skipif(not backends.HAS_MAMBA_KERNELS, reason="needs mamba-ssm and causal-conv1d")
@pytest.mark.parametrize("T", [1, 3, 300, 2100])
@pytest.mark.parametrize("with_state", [False, True])
def test_mamba_sequence_kernels_match_reference(T, with_state):
    seed = fresh_seed()
    conv_ref, _, scan_ref, _ = KERNELS["ref"]
    conv_cuda, _, scan_cuda, _ = KERNELS["cuda"]
    Bsz, E, N, K = 2, 256, 16, 4
    x = torch.randn(Bsz, E, T, device=CUDA)
    w, bias = torch.randn(E, K, device=CUDA) * 0.5, torch.randn(E, device=CUDA)
    conv_state = torch.randn(Bsz, E, K - 1, device=CUDA) if with_state else None
    (y1, s1), (y2, s2) = conv_ref(x, w, bias, conv_state), conv_cuda(x, w, bias, conv_state)
    assert rel(y2, y1) < 1e-5 and torch.equal(s1, s2), seed

    u = torch.randn(Bsz, E, T, device=CUDA)
    delta = torch.randn(Bsz, E, T, device=CUDA) * 0.5
    A = -torch.rand(E, N, device=CUDA) * 2
    Bm, Cm = torch.randn(Bsz, N, T, device=CUDA), torch.randn(Bsz, N, T, device=CUDA)
    D, dbias = torch.randn(E, device=CUDA), torch.randn(E, device=CUDA) * 0.3
    h0 = torch.randn(Bsz, E, N, device=CUDA) if with_state else None
    (y1, h1), (y2, h2) = scan_ref(u, delta, A, Bm, Cm, D, dbias, h0), scan_cuda(u, delta, A, Bm, Cm, D, dbias, h0)
    assert rel(y2, y1) < 1e-4 and rel(h2, h1) < 1e-4, seed


@pytest.mark.skipif(not backends.HAS_MAMBA_KERNELS, reason="needs mamba-ssm and causal-conv1d")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mamba_step_kernels_match_reference(dtype):
    seed = fresh_seed()
    _, upd_ref, _, step_ref = KERNELS["ref"]
    _, upd_cuda, _, step_cuda = KERNELS["cuda"]
    Bsz, E, N, K = 3, 5120 + 96, 16, 4  # the official d_inner and a ragged channel block
    w, bias = torch.randn(E, K, device=CUDA), torch.randn(E, device=CUDA)
    state = torch.randn(Bsz, E, K - 1, device=CUDA, dtype=dtype)
    h = torch.randn(Bsz, E, N, device=CUDA)
    s_ref, s_cuda, h_ref, h_cuda = state.clone(), state.clone(), h.clone(), h.clone()
    A_log = torch.randn(E, N, device=CUDA) * 0.5
    D, dbias = torch.randn(E, device=CUDA), torch.randn(E, device=CUDA)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for _ in range(20):
        x, z = torch.randn(Bsz, 2 * E, device=CUDA, dtype=dtype).chunk(2, dim=-1)  # views, as in_proj's
        assert rel(upd_cuda(x, s_cuda, w, bias), upd_ref(x, s_ref, w, bias)) < 1e-2, seed
        assert torch.equal(s_cuda, s_ref)
        dt = torch.randn(Bsz, E, device=CUDA, dtype=dtype)
        x_dbl = torch.randn(Bsz, 160 + 2 * N, device=CUDA, dtype=dtype)
        Bm, Cm = x_dbl[:, 160:160 + N], x_dbl[:, 160 + N:]
        (y1, o1), (y2, o2) = (step_ref(h_ref, x, dt, A_log, Bm, Cm, D, dbias, z),
                              step_cuda(h_cuda, x, dt, A_log, Bm, Cm, D, dbias, z))
        assert rel(y2, y1) < tol and rel(o2, o1) < tol and rel(h_cuda, h_ref) < 1e-4, seed


# ----------------------------------------------------------------------------- whole models


@pytest.mark.parametrize("batch", [1, 2])  # batch 1 decodes through the fused GEMVs
@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_fast_model_matches_reference_after_prefill_and_64_steps(which, batch):
    seed = fresh_seed()
    model = small_models(torch.bfloat16)[which]
    ids = torch.randint(0, 1000, (batch, 300 + 64), device=CUDA)

    with backends.use(attention="ref", mamba="ref", linear="torch"):
        ref = cached_logits(model, ids, 300)
    backends._announced.clear()
    fast = cached_logits(model, ids, 300)
    if batch == 1:
        assert ("linear (one row)", "triton gemv") in backends._announced
    assert rel(fast[:, :300], ref[:, :300]) < 1e-2, seed
    assert rel(fast[:, 300:], ref[:, 300:]) < 1e-2, seed


@pytest.mark.parametrize("lengths", [(90,), (90, 33)], ids=["batch1", "batch2"])
@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_fp32_greedy_tokens_identical_for_128_steps(which, lengths):
    fresh_seed()
    model = small_models(torch.float32)[which]
    prompts = [torch.randint(0, 1000, (n,)).tolist() for n in lengths]
    reqs = [Request(p, SamplingParams(temperature=0.0, max_new_tokens=128)) for p in prompts]
    fast = Engine(model).generate(reqs)  # CUDA graphs + fast kernels
    with backends.use(attention="ref", mamba="ref", linear="torch"):
        ref = Engine(model, cuda_graphs=False).generate(reqs)
    for f, r in zip(fast, ref):
        assert f.tokens == r.tokens


@pytest.mark.parametrize("kv", [None, "fp8"], ids=["kv32", "kv8"])
@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_fp32_prompts_admitted_together_give_their_tokens_alone(which, kv):
    """The fast path's batched prefill: prompts of different lengths (across SambaY's 64-token
    window and the 16-token blocks) admitted together go through one right-padded forward call
    (mamba-ssm's conv and scan with zero time steps on the pads, each row's own ring, the
    cross-decoder on each row's last token); each request gives the tokens it gives alone."""
    fresh_seed()
    model = small_models(torch.float32)[which]
    lengths = (150, 70, 9, 64, 65)
    reqs = [Request(torch.randint(0, 1000, (n,)).tolist(), SamplingParams(temperature=0.0, max_new_tokens=40))
            for n in lengths]
    engine = Engine(model, max_batch_size=8, kv_cache_dtype=kv)
    alone = [engine.generate([r])[0].tokens for r in reqs]
    sizes = []
    real = engine.runner.prefill
    engine.runner.prefill = lambda group, *args: sizes.append(len(group)) or real(group, *args)
    assert [g.tokens for g in engine.generate(reqs)] == alone
    assert sizes == [len(lengths)]


@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_cuda_graph_ladder_gives_the_eager_tokens_as_requests_join_and_leave(which):
    """Continuous batching over graphs captured for the ladder 1, 2, 4, 8: the running set grows
    and shrinks through every size (padding rows on free slots and the scratch block), and every
    request gets the tokens and logits of the eager engine."""
    fresh_seed()
    model = small_models(torch.bfloat16)[which]
    lengths, budgets = [50, 7, 120, 33, 9, 70, 3], [40, 12, 25, 60, 8, 30, 45]
    reqs = [Request(torch.randint(0, 1000, (n,)).tolist(), SamplingParams(temperature=0.0, max_new_tokens=m))
            for n, m in zip(lengths, budgets)]
    graphed = Engine(model, max_batch_size=8, prefill_chunk=32)
    assert sorted(graphed.runner.graphs) == [1, 2, 4, 8]
    eager = Engine(model, max_batch_size=8, prefill_chunk=32, cuda_graphs=False)
    assert [g.tokens for g in graphed.generate(reqs)] == [g.tokens for g in eager.generate(reqs)]
    assert graphed.stats.decode_steps == eager.stats.decode_steps and graphed.stats.mean_batch > 2


@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_graphs_with_lookahead_sample_stop_and_preempt_as_without(which):
    """CUDA graphs with lookahead (each step launched before the last one's tokens are read, its rows
    fed from the device, the tokens read back from pinned memory) give the tokens of the same
    graphs without it: seeded sampling with a stop token, and greedy in a pool that runs dry."""
    fresh_seed()
    model = small_models(torch.float32)[which]
    lengths, budgets = [50, 7, 120, 33, 9, 70, 3], [40, 12, 25, 60, 8, 30, 45]
    prompts = [torch.randint(0, 1000, (n,)).tolist() for n in lengths]
    sampled = [Request(p, SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=m, seed=i), stop_token_ids=[7])
               for i, (p, m) in enumerate(zip(prompts, budgets))]
    greedy = [Request(p, SamplingParams(temperature=0.0, max_new_tokens=m)) for p, m in zip(prompts, budgets)]
    for reqs, blocks in ((sampled, None), (greedy, 14)):  # 13 blocks of 16: 3 preemptions
        ahead = Engine(model, max_batch_size=8, prefill_chunk=64, num_blocks=blocks)
        plain = Engine(model, max_batch_size=8, prefill_chunk=64, lookahead=False)
        assert ahead.lookahead and ahead.cuda_graphs and plain.cuda_graphs
        assert [g.tokens for g in ahead.generate(reqs)] == [g.tokens for g in plain.generate(reqs)]
        assert (ahead.stats.preemptions > 0) == (blocks is not None)
        assert ahead.free_blocks == ahead.num_blocks - 1 and not ahead.has_unfinished()


@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_compiled_graphed_decode_matches_reference(which):
    from sambay.bench import _teacher_forced, engine_for

    seed = fresh_seed()
    model = small_models(torch.bfloat16)[which]
    ids = torch.randint(0, 1000, (1, 180 + 64), device=CUDA)  # the small dense model holds 256 positions
    with torch.no_grad(), backends.use(attention="ref", mamba="ref", linear="torch"):
        ref = _teacher_forced(model, ids, 180, None)
    engine = engine_for(model, 1, ids.shape[1] + 2, compile=True, keep_logits=True, prefill_chunk=180)
    with torch.no_grad():
        fast = _teacher_forced(model, ids, 180, engine)
    assert rel(fast[1], ref[1]) < 1e-2, seed
