"""Linear layers. torch's GEMM everywhere, except for a single row on CUDA (batch-1 decoding),
where the Triton GEMV of :mod:`layers.gemv_triton` streams the weight faster; ``F.linear`` is
its reference twin. The ``linear`` backend knob (:mod:`layers.backends`) forces torch's path."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backends


def _one_row_on_gpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Inference only: the GEMV has no backward."""
    return (x.is_cuda and x.numel() == x.shape[-1] and weight.is_contiguous()
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and backends.linear_backend(x.device) == "triton")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``."""
    if _one_row_on_gpu(x, weight):
        from .gemv_triton import gemv_op

        backends.announce("linear (one row)", "triton gemv")
        return gemv_op(x.contiguous(), weight, bias)
    return F.linear(x, weight, bias)


def linear_glu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``u * silu(g)`` where ``g, u = F.linear(x, weight, bias).chunk(2, -1)``: the gated-SiLU
    MLP's first half (gate rows first, then up rows, as both official checkpoints store them)."""
    if _one_row_on_gpu(x, weight):
        from .gemv_triton import gemv_op

        return gemv_op(x.contiguous(), weight, bias, glu=True)
    gate, up = F.linear(x, weight, bias).chunk(2, dim=-1)
    return up * F.silu(gate)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and names) computed by :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
