"""The next token of each row of logits, with per-row temperature, top-p and top-k.

The rule (both paths): ``e = exp((logit - max) / T)``; token i is kept when the tokens strictly
more likely than it hold less than ``top_p`` of the mass and are fewer than ``top_k`` (0: no
limit), so tokens of equal probability are kept or dropped together and the most likely token is
always kept; the token drawn is the first, in vocabulary order, whose running kept mass passes
``u`` times the kept total (inverse-CDF sampling with the row's uniform number ``u``). Rows with
temperature 0 take the argmax (its first index); temperatures in (0, 1e-6) act as 1e-6.

:func:`sample` runs the sort-free Triton kernel (:mod:`layers.sampling_triton`) on CUDA and
:func:`sample_ref` (the same rule through a sort) elsewhere.
"""

from __future__ import annotations

import torch

from . import backends

LOG2E = 1.4426950408889634
MIN_TEMPERATURE = 1e-6  # both paths sample at temperatures below it as at it


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
           u: torch.Tensor) -> torch.Tensor:
    """One token per row of logits (B, V), each row with its own settings: temperature, top_p and
    u (B,) float32, top_k (B,) int64 -> (B, 2) int64: the token, and 1 where the row's logits
    are not all finite (the token is then meaningless)."""
    if logits.is_cuda and backends.HAS_TRITON:
        from .sampling_triton import sample_triton

        return sample_triton(logits, temperature, top_p, top_k, u)
    return sample_ref(logits, temperature, top_p, top_k, u)


def sample_ref(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
               u: torch.Tensor) -> torch.Tensor:
    """:func:`sample` in plain PyTorch: the kept tokens found by sorting each row (on a CPU only
    the sampled rows are sorted)."""
    x = logits.float()
    B, V = x.shape
    bad = ~torch.isfinite(x).all(-1)
    greedy = x.argmax(-1)
    if not x.is_cuda and not torch.compiler.is_compiling():  # no graph to capture: sort only the rows that sample
        rows = (temperature > 0).nonzero()[:, 0]
        if len(rows) < B:
            if len(rows):
                greedy[rows] = sample_ref(x[rows], temperature[rows], top_p[rows], top_k[rows], u[rows])[:, 0]
            return torch.stack([greedy, bad.long()], dim=1)
    t = torch.where(temperature > 0, temperature, 1.0).clamp(min=MIN_TEMPERATURE)  # a tiny one would overflow
    scale = torch.full_like(t, LOG2E) / t  # as the kernel divides
    e = torch.exp2((x - x.amax(-1, keepdim=True)) * scale[:, None])
    s = e.sort(dim=-1, descending=True).values
    rank = torch.arange(V, device=x.device).expand(B, V)
    # equal values count only the tokens before their run: each position takes its run's first
    first = torch.ones_like(s, dtype=torch.bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    start = torch.where(first, rank, 0).cummax(-1).values
    above = (s.cumsum(-1) - s).gather(-1, start)  # mass of the strictly more likely tokens
    k = torch.where(top_k > 0, top_k, V + 1)
    keep = (above < top_p[:, None] * s.sum(-1, keepdim=True)) & (start < k[:, None])  # a prefix
    threshold = s.gather(-1, keep.sum(-1, keepdim=True).clamp(min=1) - 1)  # NaN rows keep none
    kept = torch.where(e >= threshold, e, 0.0)
    cdf = kept.cumsum(-1)
    last = torch.where(kept > 0, rank, 0).amax(-1)  # past the end (u * total rounds up)
    pick = torch.minimum(torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True)[:, 0], last)
    token = torch.where(temperature > 0, pick, greedy)
    return torch.stack([token, bad.long()], dim=1)
