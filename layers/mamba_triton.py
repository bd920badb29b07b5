"""Mamba's one-token SSM update in one Triton kernel, for decoding.

Per row and channel e, with the state h (E, N) in fp32::

    A  = -exp(A_log[e])                          (the parameter as stored; no kernel of its own)
    dt = softplus(dt[e] + dt_bias[e])
    h  = exp(dt A) h + dt x[e] B                 (written back in place)
    y  = C . h + D[e] x[e]                       (rounded to x's dtype)
    out = y * silu(z[e])                         (the gate before out_proj)

One launch replaces what the step took before: ``-exp(A_log)`` (two kernels), mamba-ssm's state
update, and ``y * silu(z)`` (two more); on Hopper it is a programmatic dependent launch like the
GEMVs around it (:mod:`layers.gemv_triton`): the state and the parameters, which no earlier
kernel of the step writes, are read before waiting for the inputs. Reference twin:
:func:`layers.mamba.ssm_step_ref`, whose roundings it keeps (y and silu(z) rounded before the product).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gemv_triton import PDL, gdc_launch_dependents, gdc_wait

BLOCK_E = 32  # channels per program: 160 programs a row for the official d_inner (5120)


@triton.jit
def _log1p(y):
    """log(1 + y) to fp32 accuracy for small y too (log(u) * y / (u - 1), u = 1 + y rounded: the
    rounding of u cancels), where log(1 + y) alone loses y's digits (and is 0 below 6e-8)."""
    u = 1.0 + y
    return tl.where(u == 1.0, y, tl.log(u) * (y / tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def _ssm_step(STATE, X, DT, A_LOG, BM, CM, D, DT_BIAS, Z, Y, OUT, E,
              s_state, s_x, s_dt, s_b, s_c, s_z,
              N: tl.constexpr, BLOCK_E: tl.constexpr, PDL: tl.constexpr):
    b = tl.program_id(0)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, N)
    em = e < E
    m2 = em[:, None]
    ydt: tl.constexpr = Y.dtype.element_ty
    # What no earlier kernel of this step writes: the state (the previous step's) and the parameters.
    s_ptrs = STATE + b.to(tl.int64) * s_state + e[:, None] * N + n[None, :]
    h = tl.load(s_ptrs, mask=m2, other=0.0)
    a = -tl.exp(tl.load(A_LOG + e[:, None] * N + n[None, :], mask=m2, other=0.0).to(tl.float32))
    d = tl.load(D + e, mask=em, other=0.0).to(tl.float32)
    bias = tl.load(DT_BIAS + e, mask=em, other=0.0).to(tl.float32)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()  # x, dt, B, C and z are the previous kernels' outputs
    x = tl.load(X + b * s_x + e, mask=em, other=0.0).to(tl.float32)
    dt = tl.load(DT + b * s_dt + e, mask=em, other=0.0).to(tl.float32) + bias
    dt = tl.where(dt > 20.0, dt, _log1p(tl.exp(dt)))  # torch's softplus (threshold 20)
    bv = tl.load(BM + b * s_b + n).to(tl.float32)
    cv = tl.load(CM + b * s_c + n).to(tl.float32)
    h = tl.exp(dt[:, None] * a) * h + (dt * x)[:, None] * bv[None, :]
    tl.store(s_ptrs, h, mask=m2)
    y = (tl.sum(h * cv[None, :], axis=1) + d * x).to(ydt)
    tl.store(Y + b * E + e, y, mask=em)
    z = tl.load(Z + b * s_z + e, mask=em, other=0.0).to(tl.float32)
    gate = (z / (1.0 + tl.exp(-z))).to(ydt).to(tl.float32)
    tl.store(OUT + b * E + e, (y.to(tl.float32) * gate).to(ydt), mask=em)


def _rows(t: torch.Tensor, width: int) -> int:
    """The row stride of a (B, width) tensor whose rows are contiguous (views of wider rows allowed)."""
    assert t.dim() == 2 and t.shape[1] == width and t.stride(1) == 1, (tuple(t.shape), t.stride())
    return t.stride(0)


@torch.library.custom_op("sambay::ssm_step", mutates_args=("ssm_state",))
def ssm_step_triton(ssm_state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A_log: torch.Tensor,
                    B: torch.Tensor, C: torch.Tensor, D: torch.Tensor, dt_bias: torch.Tensor,
                    z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`layers.mamba.ssm_step_ref`'s contract: x, dt, z (R, E) and B, C (R, N) may be views of
    wider rows (in_proj's and x_proj's outputs); ``ssm_state`` (R, E, N) fp32, rows contiguous."""
    R, E = x.shape
    N = A_log.shape[1]
    assert ssm_state.dtype == torch.float32 and ssm_state.shape == (R, E, N) and ssm_state[0].is_contiguous()
    assert A_log.is_contiguous() and D.is_contiguous() and dt_bias.is_contiguous() and N == triton.next_power_of_2(N)
    y = torch.empty(R, E, device=x.device, dtype=x.dtype)
    out = torch.empty_like(y)
    _ssm_step[(R, triton.cdiv(E, BLOCK_E))](
        ssm_state, x, dt, A_log, B, C, D, dt_bias, z, y, out, E,
        ssm_state.stride(0), _rows(x, E), _rows(dt, E), _rows(B, N), _rows(C, N), _rows(z, E),
        N=N, BLOCK_E=BLOCK_E, PDL=PDL, num_warps=4, **({"launch_pdl": True} if PDL else {}))
    return y, out


@ssm_step_triton.register_fake
def _(ssm_state, x, dt, A_log, B, C, D, dt_bias, z):  # type: ignore[no-untyped-def]
    return x.new_empty(x.shape), x.new_empty(x.shape)
