"""The GEMV on fp8 tiles and the split-K chain, in fp32 math, against their reference twins: under
Triton's interpreter on CPU tensors where there is no CUDA (tests/conftest.py sets
TRITON_INTERPRET=1; the interpreter loads float8 e4m3 exactly), compiled on CUDA tensors on a GPU
machine. Sizes leave ragged tiles, rows and splits (an empty last split too)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("triton", reason="the kernel tests need triton (.ci/run installs it)")

from helpers import fresh_seed, rel  # noqa: E402
from layers.gemv_triton import chain, gemv  # noqa: E402
from layers.linear import linear_chain_ref, linear_ref  # noqa: E402
from layers.norm import RMSNorm, fused_norm_args  # noqa: E402
from layers.quant import quantize_fp8  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("fp8", [True, False])
@pytest.mark.parametrize("N, K, glu, norm_kind, gated, residual, config", [
    (77, 300, False, None, False, False, (2, 128, 4, 1)),      # ragged rows and columns
    (40, 256, True, "layer", False, True, (4, 64, 4, 1)),     # glu + LayerNorm + residual, even tiles
    (33, 200, False, "rms", True, True, (8, 64, 4, 1)),       # RMSNorm + silu gate + residual
    (24, 96, False, None, False, False, None),                # the table's fallback tile (all of K at once)
])
def test_gemv_fp8_tiles_match_the_reference(fp8, N, K, glu, norm_kind, gated, residual, config):
    seed = fresh_seed()
    w = torch.randn(2 * N if glu else N, K, device=DEVICE) * 0.05
    b = torch.randn(w.shape[0], device=DEVICE)
    q, s = quantize_fp8(w) if fp8 else (w, None)
    norm = {"layer": nn.LayerNorm(K), "rms": RMSNorm(K), None: None}[norm_kind]
    norm = norm.to(DEVICE) if norm is not None else None
    if norm is not None:
        nn.init.normal_(norm.weight, 1.0, 0.3)
    if norm_kind == "layer":
        nn.init.normal_(norm.bias)
    x = torch.randn(1, 1, K, device=DEVICE) * 2 + 0.5
    gate = torch.randn(N, device=DEVICE) if gated else None
    res = torch.randn(N, device=DEVICE) if residual else None
    with torch.no_grad():
        out = gemv(x, q, b, glu, fused_norm_args(norm) if norm is not None else None, gate, res, scale=s, config=config)
        ref = linear_ref(x, q, b, scale=s, glu=glu, norm=norm, gate=gate, residual=res)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert rel(out, ref) < 1e-5, seed


@pytest.mark.parametrize("fp8", [True, False])
@pytest.mark.parametrize("config", [(2, 128, 4, 1), (4, 128, 4, 3), (1, 64, 4, 8)])
def test_chain_split_k_then_gemv_matches_the_reference(fp8, config):
    """x_proj (48 rows, K = 520: the last split partly empty) then dt_proj on its first 40 outputs."""
    seed = fresh_seed()
    x = torch.randn(1, 520, device=DEVICE)
    w1, w2 = torch.randn(48, 520, device=DEVICE) * 0.05, torch.randn(200, 40, device=DEVICE) * 0.1
    (q1, s1), (q2, s2) = (quantize_fp8(w1), quantize_fp8(w2)) if fp8 else ((w1, None), (w2, None))
    y1, y2 = chain(x, q1, q2, 40, s1, s2, configs=(config, (8, 64, 4, 1)))
    r1, r2 = linear_chain_ref(x, q1, q2, 40, scale1=s1, scale2=s2)
    assert y1.shape == r1.shape and y2.shape == r2.shape
    assert rel(y1, r1) < 1e-5 and rel(y2, r2) < 1e-5, seed


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N, K, glu, norm_kind, config", [
    (77, 300, False, "layer", (2, 128, 4, 1, 1)),     # ragged rows and columns, three K tiles
    (40, 512, True, "rms", (4, 128, 4, 1, 1)),        # glu, four K tiles summed in f16
    (33, 200, False, "layer", (8, 256, 4, 1, 1)),     # K under one tile
])
def test_gemv_fp8_f16_products_stay_near_the_fp32_ones(dtype, N, K, glu, norm_kind, config):
    """F16 (fp8 weights in a 16-bit layer behind a norm): f16 products of the weights times 2**-8,
    summed in f16 across the K tiles. In an f16 layer (outputs rounded finely) it stays within 2e-3
    of the fp32-product variant (measured 2-7e-4; a sum 0.4% off fails); in a bf16 one no further
    from the exact product of the dequantized weights than 1.5 x that variant (+ 1e-3)."""
    seed = fresh_seed()
    w = torch.randn(2 * N if glu else N, K, device=DEVICE) * 0.05
    q, s = quantize_fp8(w.to(dtype))
    norm = (nn.LayerNorm(K) if norm_kind == "layer" else RMSNorm(K)).to(DEVICE, dtype)
    nn.init.normal_(norm.weight, 1.0, 0.3)
    x = (torch.randn(1, 1, K, device=DEVICE) * 3 + 0.5).to(dtype)
    args = fused_norm_args(norm)
    with torch.no_grad():
        fast = gemv(x, q, None, glu, args, scale=s, config=config).double()
        same = gemv(x, q, None, glu, args, scale=s, config=config[:4] + (0,)).double()
        exact = linear_ref(x.double(), q, None, scale=s.double(), glu=glu, norm=norm.double())
    assert fast.shape == exact.shape
    if dtype == torch.float16:
        assert rel(fast, same) < 2e-3, seed
    else:
        assert rel(fast, exact) < 1.5 * rel(same, exact) + 1e-3, seed


@pytest.mark.parametrize("epilogue", ["conv", "ring"])
def test_gemv_fp8_with_the_decode_epilogues_matches_the_reference(epilogue):
    """fp8 weights (their scales in the epilogue) before Mamba's conv step or a sliding layer's ring write."""
    from layers.mamba import causal_conv1d_update_ref

    seed = fresh_seed()
    E, K = 40, 200
    w, b = torch.randn(2 * E, K, device=DEVICE) * 0.05, torch.randn(2 * E, device=DEVICE)
    q, s = quantize_fp8(w)
    norm = nn.LayerNorm(K).to(DEVICE)
    nn.init.normal_(norm.weight, 1.0, 0.3)
    x = torch.randn(K, device=DEVICE)
    with torch.no_grad():
        ref = linear_ref(x, q, b, scale=s, norm=norm)
        if epilogue == "conv":
            cw, cb, state = torch.randn(E, 4, device=DEVICE), torch.randn(E, device=DEVICE), torch.randn(E, 3, device=DEVICE)
            got_state = state.clone()
            out = gemv(x, q, b, False, fused_norm_args(norm), scale=s, config=(4, 64, 4, 1), conv=(cw, cb, got_state))
            want = torch.cat([causal_conv1d_update_ref(ref[None, :E], state[None], cw, cb)[0], ref[E:]])
            assert rel(out, want) < 1e-5 and rel(got_state, state) < 1e-5, seed
        else:  # rows 16.. are k (12), then v (12): a ring of 3 slots of (2, 6)
            rings = [torch.randn(3, 2, 6, device=DEVICE) for _ in range(2)]
            before = [r.clone() for r in rings]
            out = gemv(x, q, b, False, fused_norm_args(norm), scale=s, config=(4, 64, 4, 1),
                       ring=(*rings, torch.tensor([1], device=DEVICE), 16))
            assert rel(out, ref) < 1e-5, seed
            assert torch.equal(rings[0][1].reshape(-1), out[16:28]) and torch.equal(rings[1][1].reshape(-1), out[28:40])
            assert all(torch.equal(r[[0, 2]], r0[[0, 2]]) for r, r0 in zip(rings, before))  # no other slot written
