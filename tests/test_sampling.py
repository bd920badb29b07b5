"""``sambay.generate.sample`` (the reference twin on a CPU) tested statistically on hand-made logits: top-p and top-k never
sample outside what they keep and hit the kept tokens at their renormalized probabilities,
temperature 0 is argmax, higher temperatures flatten the distribution."""

from __future__ import annotations

import math

import pytest
import torch

from sambay.generate import SamplingParams, sample, uniform

PROBS = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.05, 0.03, 0.01, 0.01])
DRAWS = 20_000


def draw(probs: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
         n: int = DRAWS, seed: int = 0) -> torch.Tensor:
    """Counts per token of ``n`` samples from logits log(probs), one row per draw."""
    logits = probs.log().expand(n, -1)
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed))
    tokens = sample(logits, torch.full((n,), temperature), torch.full((n,), top_p),
                    torch.full((n,), top_k, dtype=torch.long), u)[:, 0]
    return torch.bincount(tokens, minlength=probs.numel())


def chi_square(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# With DRAWS = 20000 and the fixed seed these are deterministic; the bounds are the 99.99% quantiles
# of chi-square with df = 2, 1, 7 (18.4, 15.1, 29.9), so a correct sampler passes them for any seed
# almost surely and a biased one (say 2 points of probability off) fails.
def test_top_p_keeps_the_nucleus_at_renormalized_frequencies() -> None:
    counts = draw(PROBS, top_p=0.75)  # nucleus {0, 1, 2}: the mass before token 3 is 0.80 >= 0.75
    assert counts[3:].sum() == 0
    nucleus = PROBS[:3] / PROBS[:3].sum()
    assert chi_square(counts[:3], nucleus) < 18.4
    assert torch.allclose(counts[:3] / DRAWS, nucleus, atol=0.015)


def test_top_p_keeps_at_least_the_most_likely_token() -> None:
    counts = draw(PROBS, top_p=0.01)
    assert counts[0] == DRAWS


def test_top_k_keeps_the_k_most_likely() -> None:
    counts = draw(PROBS, top_k=2)
    assert counts[2:].sum() == 0
    kept = PROBS[:2] / PROBS[:2].sum()
    assert chi_square(counts[:2], kept) < 15.1
    # top-k and top-p together: the smaller set wins
    assert draw(PROBS, top_k=3, top_p=0.5)[2:].sum() == 0  # top-p keeps {0, 1}
    assert draw(PROBS, top_k=1, top_p=0.9)[1:].sum() == 0


def test_full_distribution_at_temperature_one() -> None:
    counts = draw(PROBS)
    assert (counts > 0).all()
    assert chi_square(counts, PROBS) < 29.9


def test_temperature_zero_is_argmax() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 1000, generator=g) * 3
    u = torch.rand(64, generator=g)
    temperature = torch.zeros(64)
    temperature[::2] = 0.8  # greedy and sampled rows side by side in one batch
    tokens = sample(logits, temperature, torch.full((64,), 0.95), torch.zeros(64, dtype=torch.long), u)[:, 0]
    assert torch.equal(tokens[1::2], logits[1::2].argmax(-1))
    assert not torch.equal(tokens[::2], logits[::2].argmax(-1))  # sampled rows do vary


def entropy(counts: torch.Tensor) -> float:
    p = counts[counts > 0].double() / counts.sum()
    return float(-(p * p.log()).sum())


def test_higher_temperature_flattens() -> None:
    entropies = [entropy(draw(PROBS, temperature=t)) for t in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert entropies == sorted(entropies) and entropies[-1] - entropies[0] > 1.0
    assert entropies[-1] < math.log(len(PROBS))
    exact = float(-(PROBS * PROBS.log()).sum())
    assert entropies[2] == pytest.approx(exact, abs=0.02)
    # At temperature t the sampler follows softmax(logits / t).
    tempered = torch.softmax(PROBS.log() / 2.0, -1)
    assert chi_square(draw(PROBS, temperature=2.0), tempered) < 29.9


def test_uniform_depends_only_on_seed_and_step() -> None:
    assert uniform(3, 17) == uniform(3, 17)
    raw = [uniform(0, step) for step in range(4000)]
    values = torch.tensor(raw)
    assert ((0 <= values) & (values < 1)).all()
    assert abs(values.mean().item() - 0.5) < 0.02
    assert abs(values.var().item() - 1 / 12) < 0.01
    assert uniform(0, 5) != uniform(1, 5)
    # 24 bits: exact in float32, so the device's copy is below 1 too (a 64-bit fraction can round up to 1.0)
    assert all(float(torch.tensor(v, dtype=torch.float32)) == v < 1 for v in raw)


@pytest.mark.parametrize("bad", [{"temperature": -0.1}, {"temperature": float("nan")}, {"top_p": 0.0},
                                 {"top_p": 1.01}, {"top_k": -1}, {"max_new_tokens": 0}, {"max_new_tokens": -3}])
def test_bad_sampling_values_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        SamplingParams(**bad)


@pytest.mark.parametrize("bad", [
    {"seed": "abc"}, {"seed": 1.5}, {"seed": [1]}, {"seed": -1}, {"seed": True}, {"seed": None},
    {"temperature": True}, {"temperature": "0.5"}, {"top_p": "0.5"}, {"top_p": True},
    {"top_k": True}, {"top_k": 2.0}, {"max_new_tokens": True}, {"max_new_tokens": "8"},
])
def test_sampling_values_of_the_wrong_type_are_refused(bad: dict) -> None:
    """Booleans are not numbers here, strings are not numbers, a seed is a non-negative integer."""
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
        SamplingParams(**bad)


def test_numpy_numbers_are_sampling_values() -> None:
    import numpy as np

    p = SamplingParams(temperature=np.float32(0.5), top_k=np.int64(3), seed=np.int64(7))
    assert p.top_k == 3 and p.seed == 7
