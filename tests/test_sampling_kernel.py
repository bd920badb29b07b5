"""The sort-free sampling kernel (``layers.sampling_triton``) against its reference twin
(``layers.sampling.sample_ref``) on random rows, with settings chosen so that the answer is not
decided by rounding: top-p halfway between two tokens' masses, ``u`` in the middle of the chosen
token's share. Without CUDA the kernel runs under Triton's interpreter with smaller chunks (the
logic is the same; rows still cross chunk and sub-block boundaries); on a GPU at the official
vocabulary."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernel tests need triton (.ci/run installs it)")

from helpers import fresh_seed  # noqa: E402
from layers import sampling_triton  # noqa: E402
from layers.sampling import LOG2E, MIN_TEMPERATURE, sample, sample_ref  # noqa: E402
from layers.sampling_triton import sample_triton  # noqa: E402

GPU = torch.cuda.is_available()
# On a GPU machine these belong to the GPU suite (`pytest -m gpu`), which compiles the kernels; on a
# CPU they run unmarked, under the interpreter.
pytestmark = [pytest.mark.gpu] if GPU else []
DEVICE = torch.device("cuda" if GPU else "cpu")
VOCAB = 200064 if GPU else 2500  # CPU: 3 chunks of 1024 (the last partial), 8 sub-blocks each


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    if not GPU:  # the interpreter runs each program in Python: small chunks keep it to seconds
        monkeypatch.setattr(sampling_triton, "CHUNK", 1024)
        monkeypatch.setattr(sampling_triton, "SUB", 128)


def unambiguous_case(logits: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Settings and uniform numbers for rows of ``logits`` (as the kernel will read them) whose
    token is clear by a margin far above fp32 rounding, and that token (computed in float64) ->
    T, top_p, top_k, u, expected. Row 0 is greedy; the others cut by top-p, top-k or both, always
    between two distinct values (rounded logits tie: a cut keeps or drops a whole run)."""
    B, V = logits.shape
    x = logits.double().cpu()
    T = torch.tensor([0.5, 0.6, 1.0, 1.3], dtype=torch.float64)[torch.randint(0, 4, (B,), generator=g)]
    T[0] = 0.0
    top_p = torch.ones(B, dtype=torch.float64)
    top_k = torch.zeros(B, dtype=torch.long)
    u = torch.zeros(B, dtype=torch.float64)
    expected = x.argmax(-1)
    for b in range(1, B):
        e = torch.exp((x[b] - x[b].max()) / T[b])
        s, order = e.sort(descending=True, stable=True)
        share = s / s.sum()
        ends = torch.cat([(s[1:] < s[:-1]).nonzero()[:, 0], torch.tensor([V - 1])])  # last rank of each run
        ends = ends[(share[ends] > 2e-5) & (ends < V - 1)]  # cuts beside a token of enough mass
        r = int(ends[torch.randint(0, len(ends), (), generator=g)]) if len(ends) else 0
        start = int((s == s[r]).nonzero()[0, 0])  # the first rank of r's run
        before = share.cumsum(0) - share
        mode = b % 3
        if mode == 0 and len(ends):  # top-p between the mass above r's run and the mass up to r
            top_p[b] = (before[start] + before[r + 1]) / 2
        elif mode == 1:  # top-k: k counts the tokens strictly more likely, so start + 1 keeps the run
            top_k[b] = start + 1
        else:
            top_k[b] = r + 1
        kept = torch.zeros(V, dtype=torch.float64)
        kept[order[: r + 1]] = share[: r + 1]
        kept /= kept.sum()
        cdf = kept.cumsum(0)
        fair = (kept > 0.2 / (r + 1)).nonzero()[:, 0]
        j = int(fair[torch.randint(0, len(fair), (), generator=g)])
        u[b] = cdf[j] - kept[j] / 2
        expected[b] = j
    f32 = lambda t: t.float().to(DEVICE)  # noqa: E731
    return f32(T), f32(top_p), top_k.to(DEVICE), f32(u), expected.to(DEVICE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_and_reference_draw_the_token_the_rule_names(dtype: torch.dtype) -> None:
    seed = fresh_seed()
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.5, 2.0, 4.0, 8.0])[torch.randint(0, 4, (6, 1), generator=g)]
    logits = (torch.randn(6, VOCAB, generator=g) * scale).to(DEVICE, dtype)
    T, top_p, top_k, u, expected = unambiguous_case(logits, g)
    out = sample_triton(logits, T, top_p, top_k, u)
    ref = sample_ref(logits, T, top_p, top_k, u)
    assert torch.equal(ref[:, 0], expected), f"seed {seed}"
    assert torch.equal(out[:, 0], expected), f"seed {seed}"
    assert not out[:, 1].any() and not ref[:, 1].any()


def test_a_row_draws_the_same_token_alone_and_in_any_batch() -> None:
    """Any settings, any uniform numbers (rounding included): the kernel's sums do not depend on
    the batch, so a row's token is the same alone, first, last or among others."""
    seed = fresh_seed()
    B = 5
    logits = torch.randn(B, VOCAB, device=DEVICE) * 3
    T = torch.tensor([0.6, 1.0, 0.0, 0.6, 1.2], device=DEVICE)
    top_p = torch.tensor([0.95, 0.5, 0.95, 1.0, 0.999], device=DEVICE)
    top_k = torch.tensor([0, 0, 0, 40, 0], device=DEVICE)
    u = torch.rand(B, device=DEVICE)
    together = sample_triton(logits, T, top_p, top_k, u)
    for b in range(B):
        alone = sample_triton(logits[b:b + 1], T[b:b + 1], top_p[b:b + 1], top_k[b:b + 1], u[b:b + 1])
        assert torch.equal(alone[0], together[b]), f"seed {seed}, row {b}"
    order = torch.randperm(B, device=DEVICE)
    shuffled = sample_triton(logits[order], T[order], top_p[order], top_k[order], u[order])
    assert torch.equal(shuffled, together[order]), f"seed {seed}"


def test_equal_probabilities_are_kept_or_dropped_together() -> None:
    """top-k with ties keeps the whole run at the cut (both paths); top-p too."""
    seed = fresh_seed()
    V = VOCAB
    levels = torch.randint(0, 6, (4, V), device=DEVICE).float()  # a few values, each many times
    T = torch.ones(4, device=DEVICE)
    top_k = torch.tensor([1, 2, 0, 3], device=DEVICE)  # fewer than the tokens at the top level
    top_p = torch.tensor([1.0, 1.0, 0.01, 0.5], device=DEVICE)
    for _ in range(3):
        u = torch.rand(4, device=DEVICE)
        for name, fn in (("kernel", sample_triton), ("reference", sample_ref)):
            tokens = fn(levels, T, top_p, top_k, u)[:, 0]
            assert (levels.gather(1, tokens[:, None])[:, 0] == 5).all(), f"seed {seed}, {name}"
    # and every token of the top level can be drawn: the run is kept whole
    u = (torch.arange(16, device=DEVICE) + 0.5) / 16
    tokens = sample_triton(levels[1:2].expand(16, -1), T[:1].expand(16), top_p[1:2].expand(16),
                           top_k[1:2].expand(16), u)[:, 0]
    top = (levels[1] == 5).nonzero()[:, 0]
    assert tokens.unique().numel() > 12 and torch.isin(tokens, top).all() and tokens.max() > top[len(top) // 2]


def test_non_finite_rows_are_flagged() -> None:
    logits = torch.randn(4, VOCAB, device=DEVICE)
    logits[1, VOCAB - 1] = float("nan")
    logits[2, 5] = float("inf")
    logits[3, : VOCAB // 2] = float("-inf")  # flagged too (as isfinite would), yet sampled among the rest
    args = (torch.full((4,), 0.6, device=DEVICE), torch.full((4,), 0.9, device=DEVICE),
            torch.zeros(4, dtype=torch.long, device=DEVICE), torch.rand(4, device=DEVICE))
    for fn in (sample_triton, sample_ref):
        out = fn(logits, *args)
        assert out[:, 1].tolist() == [0, 1, 1, 1]
    out = sample_triton(logits, *args)
    assert out[3, 0] >= VOCAB // 2  # never a token of probability 0
    assert ((0 <= out[:, 0]) & (out[:, 0] < VOCAB)).all()


def test_the_twins_share_their_constants() -> None:
    assert (sampling_triton._LOG2E.value, sampling_triton._MIN_T.value) == (LOG2E, MIN_TEMPERATURE)


def test_sample_dispatches_to_the_kernel_on_cuda_only() -> None:
    logits = torch.randn(3, VOCAB, device=DEVICE)
    args = (torch.full((3,), 0.7, device=DEVICE), torch.full((3,), 0.9, device=DEVICE),
            torch.zeros(3, dtype=torch.long, device=DEVICE), torch.rand(3, device=DEVICE))
    want = (sample_triton if GPU else sample_ref)(logits, *args)
    assert torch.equal(sample(logits, *args), want)


def test_tiny_temperatures_and_a_uniform_number_of_one_stay_in_the_kept_set() -> None:
    """A temperature far below 1e-6 (whose scale would overflow) samples as at 1e-6, here the
    argmax; u = 1.0 (what float32 may round a number just below 1 to) draws the last kept token,
    never one top-k dropped."""
    fresh_seed()
    logits = torch.randn(3, VOCAB, device=DEVICE) * 3
    T = torch.tensor([1e-40, 4e-39, 1.0], device=DEVICE)
    top_p = torch.tensor([0.95, 0.95, 1.0], device=DEVICE)
    top_k = torch.tensor([0, 0, 10], device=DEVICE)
    u = torch.tensor([0.5, 0.5, 1.0], device=DEVICE)
    top10 = logits[2].topk(10).indices
    for name, fn in (("kernel", sample_triton), ("reference", sample_ref)):
        out = fn(logits, T, top_p, top_k, u)
        assert out[:2, 0].tolist() == logits[:2].argmax(-1).tolist(), name
        assert out[2, 0] == top10.max(), name  # the last of the kept ten in vocabulary order
        assert not out[:, 1].any(), name
