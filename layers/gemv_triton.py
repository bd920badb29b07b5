"""Matrix-vector products for one-token decoding, in Triton.

At batch 1 a decode step is a chain of matrix-vector products whose cost is reading the weights
once, so the only goal here is streaming them at full memory bandwidth: each program owns
``BLOCK_N`` output rows, walks along K reading ``BLOCK_N x BLOCK_K`` tiles (contiguous rows of
the (N, K) weight), accumulates in fp32 and reduces once at the end. ``glu=True`` also fuses
the gated-SiLU MLP's activation: the weight holds the gate rows then the up rows, and each
program reads row i of both and writes ``silu(g_i) * u_i``.

Reference twins: ``F.linear`` and :func:`layers.mlp.swiglu`'s activation.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _gemv(X, W, BIAS, OUT, N, K: tl.constexpr, HAS_BIAS: tl.constexpr, GLU: tl.constexpr, EVEN: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    w_ptrs = W + rows[:, None].to(tl.int64) * K + cols[None, :]
    up_ptrs = w_ptrs + N.to(tl.int64) * K  # GLU: row i of the up half
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    acc_up = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for k in range(0, K, BLOCK_K):  # K is a constexpr: a static loop the compiler pipelines
        if EVEN:
            x = tl.load(X + k + cols).to(tl.float32)
            w = tl.load(w_ptrs + k)
            if GLU:
                u = tl.load(up_ptrs + k)
        else:
            kmask = k + cols < K
            mask = (rows[:, None] < N) & kmask[None, :]
            x = tl.load(X + k + cols, mask=kmask, other=0.0).to(tl.float32)
            w = tl.load(w_ptrs + k, mask=mask, other=0.0)
            if GLU:
                u = tl.load(up_ptrs + k, mask=mask, other=0.0)
        acc += w.to(tl.float32) * x[None, :]
        if GLU:
            acc_up += u.to(tl.float32) * x[None, :]
    out = tl.sum(acc, axis=1)
    if HAS_BIAS:
        out += tl.load(BIAS + rows, mask=rows < N, other=0.0).to(tl.float32)
    if GLU:
        up = tl.sum(acc_up, axis=1)
        if HAS_BIAS:
            up += tl.load(BIAS + N + rows, mask=rows < N, other=0.0).to(tl.float32)
        # Round the two products as the unfused path does before the activation.
        g = out.to(OUT.dtype.element_ty).to(tl.float32)
        up = up.to(OUT.dtype.element_ty).to(tl.float32)
        out = up * (g / (1.0 + tl.exp(-g)))
    tl.store(OUT + rows, out.to(OUT.dtype.element_ty), mask=rows < N)


def gemv_config(n: int, k: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for an (n, k) weight, from a sweep over the official shapes on
    an H100 (``examples/bench_gemv.py --sweep``): two rows per program for tall weights (and for small ones,
    which have few rows to share), four for the 2560-3072-row ones, tiles of 1024 where K allows."""
    block_n = 2 if n >= 4096 or n < 1024 else 4
    block_k = next((b for b in (1024, 512, 256) if k % b == 0), min(256, triton.next_power_of_2(k)))
    return block_n, block_k, 4 if block_n == 2 else 8


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, glu: bool = False,
         config: tuple[int, int, int] | None = None) -> torch.Tensor:
    """x (..., K) holding one row, weight (N, K) contiguous -> (..., N), or (..., N / 2) with ``glu``."""
    K = x.shape[-1]
    N = weight.shape[0] // 2 if glu else weight.shape[0]
    assert x.numel() == K and weight.shape[1] == K and weight.is_contiguous() and x.is_contiguous()
    block_n, block_k, warps = config or gemv_config(N, K)
    out = torch.empty(*x.shape[:-1], N, device=x.device, dtype=x.dtype)
    _gemv[(triton.cdiv(N, block_n),)](
        x, weight, bias if bias is not None else weight, out, N, K,
        HAS_BIAS=bias is not None, GLU=glu, EVEN=K % block_k == 0 and N % block_n == 0,
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps)
    return out


@torch.library.custom_op("sambay::gemv", mutates_args=())
def gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, glu: bool = False) -> torch.Tensor:
    """:func:`gemv` as an operator torch.compile keeps whole (and CUDA graphs capture)."""
    return gemv(x, weight, bias, glu)


@gemv_op.register_fake
def _(x, weight, bias=None, glu=False):  # type: ignore[no-untyped-def]
    return x.new_empty(*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0])
