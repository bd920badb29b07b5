"""Gated Memory Unit: the cross-decoder's cheap token mixer over the self-decoder's memory."""

from __future__ import annotations

import torch
from torch import nn

from .linear import Linear


class GMU(nn.Module):
    """``out_proj(silu(in_proj(x)) * memory)``.

    ``memory`` (B, T, d_inner) is the SSM output of the memory layer (layer h) for the same
    tokens, so the GMU needs no cache of its own.
    """

    def __init__(self, dim: int, d_inner: int, bias: bool = False) -> None:
        super().__init__()
        self.in_proj = Linear(dim, d_inner, bias=bias)
        self.out_proj = Linear(d_inner, dim, bias=bias)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, norm: nn.Module | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + GMU(norm(x), memory)``; the gate and the residual add ride with the projections."""
        return self.out_proj(self.in_proj(x, norm=norm, gate=memory), residual=residual)
