"""Linear layers, with the block around them: an optional norm before, and an optional gate or
residual add after.

torch's GEMM everywhere, except for a single row on CUDA (batch-1 decoding), where the Triton
GEMV of :mod:`layers.gemv_triton` streams the weight faster and computes the norm, gate and
residual add in the same kernel. :func:`linear_ref` is its reference twin. The ``linear``
backend knob (:mod:`layers.backends`) forces torch's path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backends
from .norm import fused_norm_args


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, glu: bool = False,
               norm: nn.Module | None = None, gate: torch.Tensor | None = None,
               residual: torch.Tensor | None = None) -> torch.Tensor:
    """``residual + silu(F.linear(norm(x), weight, bias)) * gate``, each part optional:

    - ``norm`` (``nn.LayerNorm`` or :class:`layers.norm.RMSNorm`) reads x cast to the weights' dtype;
    - ``glu``: ``u * silu(g)`` where ``g, u = F.linear(...).chunk(2, -1)`` (gate rows first, then up
      rows, as both official checkpoints store the gated-SiLU MLP);
    - ``gate``: ``silu(out) * gate``;
    - ``residual``: ``residual + out``, in the residual's dtype (SambaY's stream is fp32).
    """
    if norm is not None:
        x = norm(x.to(weight.dtype))
    out = F.linear(x, weight, bias)
    if glu:
        g, u = out.chunk(2, dim=-1)
        out = u * F.silu(g)
    if gate is not None:
        out = F.silu(out) * gate
    return out if residual is None else residual + out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, glu: bool = False,
           norm: nn.Module | None = None, gate: torch.Tensor | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`linear_ref`; one kernel for a single row of inference on CUDA (where the fused kernel
    computes exactly what :func:`linear_ref` does: a norm it knows, a gate in the weights' dtype and
    a residual of the output's shape in the weights' dtype or fp32)."""
    out_shape = (*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0])
    fused_norm = fused_norm_args(norm) if x.is_cuda else None
    if (x.numel() == x.shape[-1] and x.is_cuda and weight.is_contiguous() and fused_norm is not None
            and backends.linear_backend(x.device) == "triton"
            and (gate is None or (gate.shape == out_shape and gate.dtype == weight.dtype))
            and (residual is None or (residual.shape == out_shape and residual.dtype in (weight.dtype, torch.float32)))
            and not backends.needs_autograd(x, weight, bias, norm, gate, residual)):
        from .gemv_triton import gemv_op

        backends.announce("linear (one row)", "triton gemv")
        flat = [t.reshape(-1).contiguous() if t is not None else None for t in (gate, residual)]
        return gemv_op(x.contiguous(), weight, bias, glu, *fused_norm, *flat).view(out_shape)
    return linear_ref(x, weight, bias, glu=glu, norm=norm, gate=gate, residual=residual)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and names) computed by :func:`linear`; ``forward`` takes
    :func:`linear`'s ``norm``, ``gate`` and ``residual``."""

    def forward(self, x: torch.Tensor, *, norm: nn.Module | None = None, gate: torch.Tensor | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        return linear(x, self.weight, self.bias, norm=norm, gate=gate, residual=residual)
