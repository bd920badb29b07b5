"""Normalization layers. SambaY uses LayerNorm (weight + bias) around every block and an
RMSNorm inside differential attention; the dense Phi-4-mini uses RMSNorm everywhere."""

from __future__ import annotations

import torch
from torch import nn

# How a fused kernel's prologue (layers.gemv_triton) describes the norm before a projection.
NO_NORM, LAYER_NORM, RMS_NORM = 0, 1, 2

# LayerNorm is torch's own: it already accumulates in fp32 for half-precision inputs.
LayerNorm = nn.LayerNorm


class RMSNorm(nn.Module):
    """``x / rms(x) * weight``, computed in fp32 and returned in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def fused_norm_args(norm: nn.Module | None) -> tuple | None:
    """``(kind, weight, bias, eps)``: how a fused prologue computes ``norm``; None for a norm no
    fused kernel computes exactly (an unweighted or multi-dimensional LayerNorm, any other module)."""
    if norm is None:
        return NO_NORM, None, None, 0.0
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None and len(norm.normalized_shape) == 1:
        return LAYER_NORM, norm.weight, norm.bias, norm.eps
    if isinstance(norm, RMSNorm):
        return RMS_NORM, norm.weight, None, norm.eps
    return None
