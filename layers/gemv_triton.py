"""Matrix-vector products for one-token decoding, in Triton.

At batch 1 a decode step is a chain of matrix-vector products whose cost is reading the weights
once, so the goal here is streaming them at full memory bandwidth, and leaving as little else
as possible between them: every small kernel in the chain costs a few microseconds of launch,
ramp-up and tail. So the block's norm and residual add travel with its projections:

- each program owns ``BLOCK_N`` output rows, walks along K reading ``BLOCK_N x BLOCK_K`` tiles
  (contiguous rows of the (N, K) weight), accumulates in fp32 and reduces once at the end;
- ``norm`` (prologue): the input is first normalized by a LayerNorm or RMSNorm; every program
  computes the row's statistics itself (K floats from L2) rather than waiting for a kernel that
  does it once;
- ``glu``: the weight holds the gate rows then the up rows, and each program reads row i of both
  and writes ``silu(g_i) * u_i`` (the gated-SiLU MLP);
- ``gate`` (epilogue): ``silu(out) * gate`` (the GMU);
- ``residual`` (epilogue): ``residual + out``, in the residual's dtype;
- on Hopper each launch is a programmatic dependent launch: the kernel's programs are placed
  while the previous kernel drains, request their first weight tile (which depends on nothing),
  and wait (``griddepcontrol.wait``) before reading the input.

Intermediates are rounded to the weights' dtype where the unfused torch path rounds them, so the
result is that path's up to the order of the fp32 sums and the compiler's fused multiply-adds
(``tests/test_gpu.py`` bounds the difference). Reference twin: :func:`layers.linear.linear_ref`.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

try:  # programmatic dependent launch came with Triton 3.3
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # the kernels only reach these names when PDL is on
    gdc_launch_dependents = gdc_wait = None

from . import environment
from .norm import NO_NORM

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"



@triton.jit
def _silu_rounded(v, dtype: tl.constexpr):
    """silu of ``v`` rounded to ``dtype`` first, the result rounded again (torch's F.silu on a tensor of ``dtype``)."""
    v = v.to(dtype).to(tl.float32)
    return (v / (1.0 + tl.exp(-v))).to(dtype).to(tl.float32)


@triton.jit
def _weight_tile(w_ptrs, up_ptrs, k, rows, kmask, N, GLU: tl.constexpr, EVEN: tl.constexpr):
    if EVEN:
        w = tl.load(w_ptrs + k)
        u = tl.load(up_ptrs + k) if GLU else w
    else:
        mask = (rows[:, None] < N) & kmask[None, :]
        w = tl.load(w_ptrs + k, mask=mask, other=0.0)
        u = tl.load(up_ptrs + k, mask=mask, other=0.0) if GLU else w
    return w, u


@triton.jit
def _input_tile(X, NORM_W, NORM_B, k, cols, kmask, mean, rstd, wdt: tl.constexpr, NORM: tl.constexpr,
                NORM_BIAS: tl.constexpr):
    """x[k : k + BLOCK_K] in fp32, cast to the weights' dtype and normalized as the norm module does."""
    x = tl.load(X + k + cols, mask=kmask, other=0.0).to(wdt).to(tl.float32)
    if NORM == 1:  # torch's LayerNorm: one rounding, after the affine map
        x = (x - mean) * rstd * tl.load(NORM_W + k + cols, mask=kmask, other=0.0).to(tl.float32)
        if NORM_BIAS:
            x += tl.load(NORM_B + k + cols, mask=kmask, other=0.0).to(tl.float32)
        x = x.to(wdt).to(tl.float32)
    elif NORM == 2:  # layers.norm.RMSNorm: rounded before and after the weight
        x = (x * rstd).to(wdt).to(tl.float32) * tl.load(NORM_W + k + cols, mask=kmask, other=0.0).to(tl.float32)
        x = x.to(wdt).to(tl.float32)
    return x


@triton.jit
def _gemv(X, W, BIAS, OUT, NORM_W, NORM_B, GATE, RES, N, eps,
          K: tl.constexpr, HAS_BIAS: tl.constexpr, GLU: tl.constexpr, NORM: tl.constexpr, NORM_BIAS: tl.constexpr,
          GATED: tl.constexpr, RESIDUAL: tl.constexpr, EVEN: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr):
    wdt: tl.constexpr = W.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    w_ptrs = W + rows[:, None].to(tl.int64) * K + cols[None, :]
    up_ptrs = w_ptrs + N.to(tl.int64) * K  # GLU: row i of the up half
    # The first weight tile is requested before anything else (it depends on no earlier kernel),
    # so memory is busy while the program waits for its input and computes the norm statistics.
    kmask = cols < K
    w, u = _weight_tile(w_ptrs, up_ptrs, 0, rows, kmask, N, GLU, EVEN)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()  # the input is the previous kernel's output
    mean = 0.0
    rstd = 1.0
    if NORM != 0:  # statistics of x cast to the weights' dtype, in fp32; shifted sums keep the variance exact
        shift = 0.0
        if NORM == 1:
            shift = tl.load(X).to(wdt).to(tl.float32)
        s1 = tl.zeros((BLOCK_K,), tl.float32)
        s2 = tl.zeros((BLOCK_K,), tl.float32)
        for k in range(0, K, BLOCK_K):
            m = k + cols < K
            d = tl.where(m, tl.load(X + k + cols, mask=m, other=0.0).to(wdt).to(tl.float32) - shift, 0.0)
            s1 += d
            s2 += d * d
        t1 = tl.sum(s1, 0)
        if NORM == 1:
            mean = shift + t1 / K
            rstd = tl.rsqrt((tl.sum(s2, 0) - t1 * t1 / K) / K + eps)
        else:
            rstd = tl.rsqrt(tl.sum(s2, 0) / K + eps)
    x = _input_tile(X, NORM_W, NORM_B, 0, cols, kmask, mean, rstd, wdt, NORM, NORM_BIAS)
    acc = w.to(tl.float32) * x[None, :]
    acc_up = u.to(tl.float32) * x[None, :]
    for k in range(BLOCK_K, K, BLOCK_K):  # K is a constexpr: a static loop the compiler pipelines
        kmask = k + cols < K
        w, u = _weight_tile(w_ptrs, up_ptrs, k, rows, kmask, N, GLU, EVEN)
        x = _input_tile(X, NORM_W, NORM_B, k, cols, kmask, mean, rstd, wdt, NORM, NORM_BIAS)
        acc += w.to(tl.float32) * x[None, :]
        if GLU:
            acc_up += u.to(tl.float32) * x[None, :]
    rmask = rows < N
    out = tl.sum(acc, axis=1)
    if HAS_BIAS:
        out += tl.load(BIAS + rows, mask=rmask, other=0.0).to(tl.float32)
    if GLU:
        up = tl.sum(acc_up, axis=1)
        if HAS_BIAS:
            up += tl.load(BIAS + N + rows, mask=rmask, other=0.0).to(tl.float32)
        # Round the two products as the unfused path does before the activation.
        out = _silu_rounded(out, wdt) * up.to(wdt).to(tl.float32)
    if GATED:
        out = _silu_rounded(out, wdt) * tl.load(GATE + rows, mask=rmask, other=0.0).to(tl.float32)
    if RESIDUAL:
        out = tl.load(RES + rows, mask=rmask, other=0.0).to(tl.float32) + out.to(wdt).to(tl.float32)
    tl.store(OUT + rows, out.to(OUT.dtype.element_ty), mask=rmask)


# (BLOCK_N, BLOCK_K, num_warps) for the official weights, keyed by (output rows, K, glu, norm): the
# best of a sweep on an H100 (``examples/bench_gemv.py --sweep``, each shape with the fusion it has
# in the model). Gains over the fallback below reach 2 us on the small projections.
TUNED = {
    (10240, 2560, False, True): (8, 512, 4),  # SambaY mamba in_proj
    (192, 5120, False, False): (4, 1024, 8),  # SambaY mamba x_proj
    (5120, 160, False, False): (8, 256, 8),  # SambaY mamba dt_proj
    (2560, 5120, False, False): (2, 1024, 4),  # SambaY mamba / GMU out_proj
    (5120, 2560, False, True): (8, 512, 4),  # SambaY attention Wqkv, GMU in_proj
    (2560, 2560, False, False): (2, 1024, 4),  # SambaY attention out_proj
    (2560, 2560, False, True): (8, 512, 4),  # SambaY cross-attention Wqkv
    (10240, 2560, True, True): (8, 256, 4),  # SambaY MLP fc1
    (2560, 10240, False, False): (8, 1024, 8),  # SambaY MLP fc2
    (200064, 2560, False, True): (4, 512, 4),  # SambaY lm_head
    (5120, 3072, False, True): (4, 1024, 8),  # dense qkv_proj
    (3072, 3072, False, False): (4, 1024, 4),  # dense o_proj
    (8192, 3072, True, True): (2, 1024, 4),  # dense gate_up_proj
    (3072, 8192, False, False): (8, 1024, 8),  # dense down_proj
    (200064, 3072, False, True): (2, 1024, 8),  # dense lm_head
}


def gemv_config(n: int, k: int, glu: bool = False, norm: bool = False) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for ``n`` output rows of a K-wide weight: :data:`TUNED` for the
    official shapes, else what the sweep found most often: two rows per program and tiles of 1024
    (eight rows and tiles of 512 with a norm, whose statistics every program reads x once more for)."""
    if (n, k, glu, norm) in TUNED:
        return TUNED[n, k, glu, norm]
    block_n, block_k = (8, 512) if norm else (2, 1024)
    return block_n, min(block_k, triton.next_power_of_2(k)), 4


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, glu: bool = False,
         norm: tuple[int, torch.Tensor, torch.Tensor | None, float] | None = None,
         gate: torch.Tensor | None = None, residual: torch.Tensor | None = None,
         config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """x (..., K) holding one row, weight (N, K) contiguous -> (..., N), or (..., N / 2) with ``glu``.

    ``norm = (LAYER_NORM or RMS_NORM, weight, bias, eps)`` normalizes x first (x may then be fp32);
    ``gate`` (N,) returns ``silu(out) * gate``; ``residual`` (N,) returns ``residual + out`` in the
    residual's dtype. Otherwise the result has the weights' dtype."""
    K = x.shape[-1]
    N = weight.shape[0] // 2 if glu else weight.shape[0]
    assert x.numel() == K and weight.shape[1] == K and weight.is_contiguous() and x.is_contiguous()
    for t in (gate, residual):
        assert t is None or (t.numel() == N and t.is_contiguous())
    block_n, block_k, warps = config or gemv_config(N, K, glu, norm is not None)
    kind, norm_w, norm_b, eps = norm or (NO_NORM, None, None, 0.0)
    out = torch.empty(*x.shape[:-1], N, device=x.device,
                      dtype=residual.dtype if residual is not None else weight.dtype)
    _gemv[(triton.cdiv(N, block_n),)](
        x, weight, bias if bias is not None else weight, out,
        norm_w if norm_w is not None else weight, norm_b if norm_b is not None else weight,
        gate if gate is not None else weight, residual if residual is not None else weight, N, eps, K,
        HAS_BIAS=bias is not None, GLU=glu, NORM=kind, NORM_BIAS=norm_b is not None, GATED=gate is not None,
        RESIDUAL=residual is not None, EVEN=K % block_k == 0 and N % block_n == 0,
        BLOCK_N=block_n, BLOCK_K=block_k, PDL=PDL, num_warps=warps, **({"launch_pdl": True} if PDL else {}))
    return out


def _pdl_available() -> bool:
    """Programmatic dependent launch: Triton 3.3+, Hopper or newer (the current device, at import),
    not under the interpreter, not switched off with ``SAMBAY_PDL=0``."""
    if INTERPRET or gdc_wait is None or environment.read("SAMBAY_PDL", "1") == "0" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 9


PDL = _pdl_available()


@torch.library.custom_op("sambay::gemv", mutates_args=())
def gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, glu: bool = False,
            norm_kind: int = NO_NORM, norm_weight: torch.Tensor | None = None, norm_bias: torch.Tensor | None = None,
            eps: float = 0.0, gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`gemv` as an operator torch.compile keeps whole (and CUDA graphs capture)."""
    norm = (norm_kind, norm_weight, norm_bias, eps) if norm_kind != NO_NORM else None
    return gemv(x, weight, bias, glu, norm, gate, residual)


@gemv_op.register_fake
def _(x, weight, bias=None, glu=False, norm_kind=NO_NORM, norm_weight=None, norm_bias=None, eps=0.0, gate=None,
      residual=None):  # type: ignore[no-untyped-def]
    n = weight.shape[0] // 2 if glu else weight.shape[0]
    return x.new_empty(*x.shape[:-1], n, dtype=residual.dtype if residual is not None else weight.dtype)
