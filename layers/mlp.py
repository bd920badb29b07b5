"""The gated SiLU MLP shared by SambaY and the dense Phi-4-mini."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu(x: torch.Tensor, up: nn.Linear, down: nn.Linear) -> torch.Tensor:
    """``down(u * silu(g))`` where ``g, u = up(x).chunk(2)``: the fused projection holds the
    gate first, then the up half (the order of both official checkpoints)."""
    gate, y = up(x).chunk(2, dim=-1)
    return down(y * F.silu(gate))


class MLP(nn.Module):
    """SambaY's MLP: ``fc1: d -> 2*ff`` (gate, up), ``fc2: ff -> d``."""

    def __init__(self, dim: int, hidden: int, bias: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.fc1, self.fc2)


class Phi3MLP(nn.Module):
    """The dense Phi-4-mini's MLP (transformers' Phi3 names): ``gate_up_proj: d -> 2*ff`` (gate, up),
    ``down_proj: ff -> d``, no biases."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Linear(dim, 2 * hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return swiglu(x, self.gate_up_proj, self.down_proj)
