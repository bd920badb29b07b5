"""The Triton kernels' logic on a CPU: Triton's interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py where there is no CUDA) runs them on CPU tensors, against their reference twins.

fp32 only (the interpreter truncates fp32 -> bf16 and its bf16 ``tl.dot`` is wrong), small shapes
that cross the tiles (BLOCK_N / BLOCK_K of the GEMV, the decode kernel's 64-slot blocks) and the
decode kernel's splits. On a GPU machine the same tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

pytest.importorskip("triton", reason="the kernel tests need triton (.ci/run installs it)")

from helpers import fresh_seed, rel  # noqa: E402
from layers.attention import DiffAttnCore, attention_ref  # noqa: E402
from layers.linear import linear_ref  # noqa: E402
from layers.norm import RMSNorm, fused_norm_args  # noqa: E402
from layers.rope import rotary_store_ref  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from layers.mamba_triton import _log1p  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_kernels_run_under_the_interpreter_without_cuda() -> None:
    """Without CUDA the conftest selects the interpreter (else no kernel could run here); with
    CUDA it leaves it off, so the GPU machine compiles the kernels."""
    from layers import gemv_triton

    assert (os.environ.get("TRITON_INTERPRET") == "1") == (not torch.cuda.is_available())
    assert gemv_triton.INTERPRET == (not torch.cuda.is_available())
    assert not gemv_triton.PDL or torch.cuda.is_available()


# ----------------------------------------------------------------------------- GEMV

# (N output rows, K, (BLOCK_N, BLOCK_K, warps) or None for gemv_config's choice)
GEMV_SHAPES = [
    (64, 256, (8, 64, 4)),    # EVEN: whole tiles, 8 row blocks x 4 K tiles
    (37, 200, (8, 64, 4)),    # ragged rows and columns: masked loads
    (33, 256, (8, 64, 4)),    # ragged rows only (EVEN off because of N)
    (40, 100, (4, 128, 4)),   # K under one tile
    (300, 256, None),         # the default configuration
]

# (norm, bias, glu, gate, residual): every fusion, each in several combinations
GEMV_FUSIONS = [
    (None, False, False, False, None),
    (None, True, False, False, None),
    ("layer", False, True, False, "fp32"),   # LayerNorm prologue, gated-SiLU MLP, fp32 residual stream
    ("layer_nobias", True, False, True, None),  # LayerNorm without bias, bias, GMU gate
    ("rms", False, False, True, "same"),     # RMSNorm prologue, gate, residual in the weights' dtype
    ("rms", True, True, False, "fp32"),
    (None, True, False, False, "same"),
]


def _norm(kind: str | None, K: int) -> nn.Module | None:
    if kind is None:
        return None
    norm = RMSNorm(K) if kind == "rms" else nn.LayerNorm(K, bias=kind == "layer")
    nn.init.normal_(norm.weight)
    if getattr(norm, "bias", None) is not None:
        nn.init.normal_(norm.bias)
    return norm.to(DEVICE)


@pytest.mark.parametrize("N, K, config", GEMV_SHAPES)
@pytest.mark.parametrize("norm_kind, bias, glu, gated, residual", GEMV_FUSIONS)
def test_gemv_kernel_matches_linear_ref(N, K, config, norm_kind, bias, glu, gated, residual):
    from layers.gemv_triton import gemv

    seed = fresh_seed()
    w = torch.randn(2 * N if glu else N, K, device=DEVICE) * 0.1
    b = torch.randn(w.shape[0], device=DEVICE) if bias else None
    norm = _norm(norm_kind, K)
    x = torch.randn(1, 1, K, device=DEVICE) * 3 + 1
    gate = torch.randn(1, 1, N, device=DEVICE) if gated else None
    res = torch.randn(1, 1, N, device=DEVICE) if residual else None
    with torch.no_grad():
        want = linear_ref(x, w, b, glu=glu, norm=norm, gate=gate, residual=res)
        exact = linear_ref(x.double(), w.double(), b.double() if bias else None, glu=glu,
                           norm=copy.deepcopy(norm).double() if norm is not None else None,
                           gate=gate.double() if gated else None, residual=res.double() if residual else None)
        got = gemv(x, w, b, glu, fused_norm_args(norm) if norm is not None else None,
                   gate.reshape(-1) if gated else None, res.reshape(-1) if residual else None, config=config)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert rel(got, exact) < 1e-5 and rel(got, want) < 1e-5, f"seed {seed}"


@pytest.mark.parametrize("residual_dtype", [torch.float32, torch.float16])
def test_gemv_residual_keeps_its_dtype(residual_dtype):
    """fp16 weights: the residual add comes out in the residual's dtype, fp32 or the weights' own
    (SambaY's fp32 stream, the dense model's same-dtype one), rounded where linear_ref rounds."""
    from layers.gemv_triton import gemv

    seed = fresh_seed()
    N, K = 37, 200
    w = (torch.randn(N, K, device=DEVICE) * 0.1).half()
    x = torch.randn(1, 1, K, device=DEVICE).half()
    res = torch.randn(1, 1, N, device=DEVICE).to(residual_dtype)
    with torch.no_grad():
        got = gemv(x, w, residual=res.reshape(-1), config=(8, 64, 4))
        want = linear_ref(x, w, residual=res)  # the product rounded to fp16, then added
    assert got.dtype == want.dtype == residual_dtype and got.shape == want.shape == (1, 1, N)
    assert rel(got, want) < 1e-3, f"seed {seed}"  # fp16 products summed in another order


@pytest.mark.parametrize("E, taps, norm_kind, bias", [(37, 4, "layer", False), (32, 2, None, True), (40, 3, "rms", True)])
def test_gemv_conv_epilogue_matches_linear_then_conv_step(E, taps, norm_kind, bias):
    """Mamba's in_proj with the conv step in its epilogue: the first E outputs through one causal
    conv step (the state shifted in place), the other E passed through, over three tokens."""
    from layers.gemv_triton import gemv
    from layers.mamba import causal_conv1d_update_ref

    seed = fresh_seed()
    K = 200
    w, b = torch.randn(2 * E, K, device=DEVICE) * 0.1, (torch.randn(2 * E, device=DEVICE) if bias else None)
    cw, cb = torch.randn(E, taps, device=DEVICE), (torch.randn(E, device=DEVICE) if bias else None)
    norm = _norm(norm_kind, K)
    state = torch.randn(E, taps - 1, device=DEVICE)
    got_state = state.clone()
    for _ in range(3):
        x = torch.randn(K, device=DEVICE)
        with torch.no_grad():
            got = gemv(x, w, b, False, fused_norm_args(norm) if norm is not None else None, config=(8, 64, 4),
                       conv=(cw, cb, got_state))
            x_in, z = linear_ref(x, w, b, norm=norm).chunk(2)
            want = torch.cat([causal_conv1d_update_ref(x_in[None], state[None], cw, cb)[0], z])
        assert rel(got, want) < 1e-5, f"seed {seed}"
        assert rel(got_state, state) < 1e-6, f"seed {seed}"


@pytest.mark.parametrize("H, G, D, at", [(4, 2, 8, 3), (3, 1, 12, 0)])  # 3 x 12 + 2 x 12 rows: ragged blocks
def test_gemv_ring_epilogue_writes_k_and_v_into_the_ring_slot(H, G, D, at):
    """A sliding layer's Wqkv with the ring write in its epilogue: the output is linear_ref's and the
    k, v rows land in ring slot ``at`` (and nowhere else)."""
    from layers.gemv_triton import gemv

    seed = fresh_seed()
    K, W = 100, 5
    w, b = torch.randn((H + 2 * G) * D, K, device=DEVICE) * 0.1, torch.randn((H + 2 * G) * D, device=DEVICE)
    norm = _norm("layer", K)
    rings = [torch.randn(W, G, D, device=DEVICE) for _ in range(2)]
    want_rings = [r.clone() for r in rings]
    x = torch.randn(K, device=DEVICE)
    with torch.no_grad():
        got = gemv(x, w, b, False, fused_norm_args(norm), config=(8, 64, 4),
                   ring=(*rings, torch.tensor([at], device=DEVICE), H * D))
        want = linear_ref(x, w, b, norm=norm)
    assert rel(got, want) < 1e-5, f"seed {seed}"
    want_rings[0][at] = got[H * D:(H + G) * D].view(G, D)  # the very values the output holds
    want_rings[1][at] = got[(H + G) * D:].view(G, D)
    assert torch.equal(rings[0], want_rings[0]) and torch.equal(rings[1], want_rings[1]), f"seed {seed}"


# ----------------------------------------------------------------------------- Mamba's SSM step


@triton.jit
def _log1p_kernel(X, Y, n, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    tl.store(Y + i, _log1p(tl.load(X + i, mask=i < n, other=0.0)), mask=i < n)


def test_ssm_step_softplus_keeps_small_values():
    """The kernel's log1p (inside softplus) against torch's for 1e-30 .. 10: log(1 + y) alone would
    give 0 below 6e-8 and lose digits well above (a time step of softplus(-17) = 4e-8, not 0)."""
    y = torch.logspace(-30, 1, 500, device=DEVICE)
    out = torch.empty_like(y)
    _log1p_kernel[(1,)](y, out, y.numel(), BLOCK=512)
    assert ((out - torch.log1p(y)).abs() / torch.log1p(y)).max() < 1e-6


@pytest.mark.parametrize("R, E, N", [(1, 64, 16), (3, 80, 8)])  # 80: a ragged last channel block
def test_ssm_step_kernel_matches_reference(R, E, N):
    """The one-token SSM kernel (A from A_log, softplus, state update, y, the silu(z) gate) against
    ssm_step_ref over several steps, reading x, dt, z, B, C as views of wider rows (as the model
    passes them) and the state as a slice of a larger slot buffer."""
    from layers.mamba import ssm_step_ref
    from layers.mamba_triton import ssm_step_triton

    seed = fresh_seed()
    A_log = torch.randn(E, N, device=DEVICE) * 0.5
    D, dt_bias = torch.randn(E, device=DEVICE), torch.randn(E, device=DEVICE) * 0.5
    slots = torch.randn(R + 2, E, N, device=DEVICE)
    got_state, want_state = slots.clone()[1:R + 1], slots.clone()[1:R + 1]
    for _ in range(4):
        x, z = torch.randn(R, 2 * E, device=DEVICE).chunk(2, dim=-1)
        dt = torch.randn(R, E, device=DEVICE) * 2  # both sides of softplus's threshold after the bias
        dt[0, :3] = torch.tensor([25.0, -30.0, 0.0])
        x_dbl = torch.randn(R, 4 + 2 * N, device=DEVICE)
        Bm, Cm = x_dbl[:, 4:4 + N], x_dbl[:, 4 + N:]
        y1, out1 = ssm_step_ref(want_state, x, dt, A_log, Bm, Cm, D, dt_bias, z)
        y2, out2 = ssm_step_triton(got_state, x, dt, A_log, Bm, Cm, D, dt_bias, z)
        assert rel(y2, y1) < 1e-5 and rel(out2, out1) < 1e-5, f"seed {seed}"
        assert rel(got_state, want_state) < 1e-5, f"seed {seed}"


# ----------------------------------------------------------------------------- RoPE + cache write
# rotary_store_triton(q, k, v, cos, sin, k_pool, v_pool, slots): (num_blocks, block_size, G, D) pools,
# one flat slot per row (tests/test_paged_kernels.py covers fp8 pools).


@pytest.mark.parametrize("B, per_row_cos", [(1, False), (3, True), (3, False)])
def test_rotary_store_kernel_matches_reference(B, per_row_cos):
    from layers.rope_triton import rotary_store_triton

    seed = fresh_seed()
    H, G, D, R, S = 4, 2, 24, 16, 9  # partial rotary; D not a power of two (masked lanes)
    qkv = torch.randn(B, 1, (H + 2 * G) * D, device=DEVICE)
    q, k, v = qkv.split([H * D, G * D, G * D], dim=-1)  # strided views, as the model passes them
    q, k, v = q.view(B, 1, H, D), k.view(B, 1, G, D), v.view(B, 1, G, D)
    angle = torch.randn(B if per_row_cos else 1, 1, R, device=DEVICE) * 100
    cos, sin = angle.cos(), angle.sin()
    caches = [torch.randn(S, 4, G, D, device=DEVICE) for _ in range(2)]  # S blocks of 4 slots
    copies = [c.clone() for c in caches]
    slots = torch.randperm(S * 4, device=DEVICE)[:B]
    want = rotary_store_ref(q, k, v, cos, sin, *caches, slots)
    got = rotary_store_triton(q, k, v, cos, sin, *copies, slots)
    assert torch.equal(got, want), f"seed {seed}"  # each product rounded as torch rounds it: the same bits
    assert torch.equal(copies[0], caches[0]) and torch.equal(copies[1], caches[1]), f"seed {seed}"


# ----------------------------------------------------------------------------- decode attention
# Today's signature: decode_attention_triton(q, k, v, q_pos (1,), k_pos (S,) or None, start (B,) or
# None, window, scale) over (B, S, Hk, D) caches. Helper `kernels` generalizes q_pos / k_pos to
# per-row positions and adds paged pools.


@pytest.mark.parametrize("B, S, Hq, Hk, DK, DV, ring, window, padded", [
    (2, 300, 4, 2, 32, 32, False, None, False),   # plain: 5 blocks of 64 over 8 splits
    (2, 200, 4, 2, 32, 32, True, 200, False),     # sliding ring: slot positions k_pos
    (1, 260, 8, 2, 32, 16, False, 70, False),     # window without a ring, DV != DK
    (3, 150, 4, 1, 16, 16, False, None, True),    # left padding (start), one KV head
    (2, 37, 4, 2, 32, 32, True, 37, True),        # tiny ring, padded: one split
])
def test_decode_attention_kernel_matches_reference(B, S, Hq, Hk, DK, DV, ring, window, padded):
    from layers.attention_triton import decode_attention_triton, launch_config, num_splits

    assert num_splits(B, Hk, S, block=launch_config(B, Hk)[0]) > (1 if S > 64 else 0)  # several splits
    seed = fresh_seed()
    for pos in (0, 63, 64, S - 1, S + 77 if ring else S // 2 + 1):
        q = torch.randn(B, 1, Hq, DK, device=DEVICE)
        k = torch.randn(B, S, Hk, DK, device=DEVICE)
        v = torch.randn(B, S, Hk, DV, device=DEVICE)
        q_pos = torch.tensor([pos], device=DEVICE)
        k_pos = pos - (pos - torch.arange(S, device=DEVICE)) % S if ring else None
        start = torch.randint(0, min(pos, 50) + 1, (B,), device=DEVICE) if padded else None
        got = decode_attention_triton(q, k, v, q_pos, k_pos, start, window, DK**-0.5)
        ref = attention_ref(q.double(), k.double(), v.double(), q_pos, k_pos, start, window, DK**-0.5)
        assert got.shape == (B, 1, Hq, DV) and got.dtype == torch.float32
        assert rel(got, ref) < 1e-5, (seed, pos)


@pytest.mark.parametrize("B, S, window, ring, padded", [
    (1, 300, None, False, False),  # cross-attention over a shared cache, several splits
    (2, 130, 100, True, False),    # sliding window over a ring buffer
    (2, 90, None, False, True),    # left padding
])
def test_differential_decode_kernel_matches_reference(B, S, window, ring, padded):
    """Differential attention of one token in the two fused launches against DiffAttnCore's
    reference path (block-diagonal queries, lambda, difference, sub-layer RMSNorm)."""
    from layers import backends
    from layers.attention_triton import decode_diff_attention_triton

    seed = fresh_seed()
    H, G, D = 8, 4, 16
    core = DiffAttnCore(D, layer_idx=5).to(DEVICE)
    for p in (core.lambda_q1, core.lambda_k1, core.lambda_q2, core.lambda_k2):
        nn.init.normal_(p, std=0.1)
    nn.init.normal_(core.subln.weight)
    q = torch.randn(B, 1, H, D, device=DEVICE)
    k, v = (torch.randn(B, S, G, D, device=DEVICE) for _ in range(2))
    q_pos = torch.tensor([S - 1 if not ring else 3 * S + 11], device=DEVICE)
    k_pos = q_pos - (q_pos - torch.arange(S, device=DEVICE)) % S if ring else None
    start = torch.tensor([0, 37], device=DEVICE)[:B] if padded else None
    with torch.no_grad():
        got = decode_diff_attention_triton(q, k, v, q_pos, k_pos, start, window, core.lambda_q1, core.lambda_k1,
                                           core.lambda_q2, core.lambda_k2, core.lambda_init, core.subln.weight,
                                           core.subln.eps)
        with backends.use(attention="ref"):
            want = core(q, k, v, q_pos, k_pos, start, window)
            exact = copy.deepcopy(core).double()(q.double(), k.double(), v.double(), q_pos, k_pos, start, window)
    assert got.shape == want.shape == (B, 1, H * D) and got.dtype == torch.float32
    assert rel(got, exact) < 1e-5 and rel(got, want) < 1e-5, f"seed {seed}"

