"""Helpers the kernel and model tests share (importable as ``helpers``: pytest puts tests/ on the path)."""

import torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64; a non-finite ``a`` fails the test."""
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm()).item()


def fresh_seed() -> int:
    """Seed torch with a new random seed and return it, so a failure names the inputs it saw."""
    seed = int(torch.randint(0, 2**31, ()).item())
    torch.manual_seed(seed)
    return seed
