"""Sampling settings, and a uniform number per (seed, step) so that a request samples the same
tokens alone, in any batch, and after being preempted and recomputed. The sampler itself, on the
device, is :func:`layers.sampling.sample`."""

from __future__ import annotations

import hashlib
import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. ``temperature=0`` is greedy; the defaults are the
    recommended reasoning settings of Phi-4-mini-flash-reasoning."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0  # 0: no top-k cut
    max_new_tokens: int = 32768
    seed: int = 0

    def __post_init__(self) -> None:
        # Booleans are ints to Python, not numbers here; nor are strings such as "0.5".
        if not (_number(self.temperature) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (_number(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (_integer(self.top_k) and self.top_k >= 0):
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not (_integer(self.max_new_tokens) and self.max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not (_integer(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


def _integer(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def uniform(seed: int, step: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, step): a row samples the same
    tokens alone or inside any batch."""
    h = hashlib.blake2b(f"{seed}:{step}".encode(), digest_size=8).digest()
    return (int.from_bytes(h, "little") >> 40) / 2**24  # 24 bits: still below 1 once stored as float32
