"""The gated SiLU MLP shared by SambaY and the dense Phi-4-mini."""

from __future__ import annotations

import torch
from torch import nn

from .linear import Linear


def swiglu(x: torch.Tensor, up: Linear, down: Linear, norm: nn.Module | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """``residual + down(u * silu(g))`` where ``g, u = up(norm(x)).chunk(2)``: the fused projection
    holds the gate first, then the up half (the order of both official checkpoints)."""
    return down(up(x, glu=True, norm=norm), residual=residual)


class MLP(nn.Module):
    """SambaY's MLP: ``fc1: d -> 2*ff`` (gate, up), ``fc2: ff -> d``."""

    def __init__(self, dim: int, hidden: int, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = Linear(dim, 2 * hidden, bias=bias)
        self.fc2 = Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor, norm: nn.Module | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + MLP(norm(x))`` (see :func:`swiglu`)."""
        return swiglu(x, self.fc1, self.fc2, norm, residual)


class Phi3MLP(nn.Module):
    """The dense Phi-4-mini's MLP (transformers' Phi3 names): ``gate_up_proj: d -> 2*ff`` (gate, up),
    ``down_proj: ff -> d``, no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up_proj = Linear(dim, 2 * hidden, bias=False)
        self.down_proj = Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor, norm: nn.Module | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + MLP(norm(x))`` (see :func:`swiglu`)."""
        return swiglu(x, self.gate_up_proj, self.down_proj, norm, residual)
