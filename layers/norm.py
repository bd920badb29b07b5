"""Normalization layers. SambaY uses LayerNorm (weight + bias) around every block and an
RMSNorm inside differential attention; the dense Phi-4-mini uses RMSNorm everywhere."""

from __future__ import annotations

import torch
from torch import nn

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
