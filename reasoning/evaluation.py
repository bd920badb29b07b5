"""Evaluation over a set of problems with reference answers: k samples per problem, pass@1
(mean correctness over the k samples, averaged over problems) and maj@k (the majority answer
of the k samples is correct), from Python or from ``sambay eval``.

Problem files are JSONL, one ``{"problem": ..., "answer": ...}`` object per line
(:func:`reasoning.curriculum.write_jsonl` writes them). A bad line is reported with its line
number and skipped; the rest is evaluated.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm

from .answers import majority_vote, maj_at_k, pass_at_1
from .engine import ReasoningEngine, Result

__all__ = ["Evaluation", "Problem", "as_problem", "evaluate", "read_problems"]


@dataclass(frozen=True)
class Problem:
    """A problem to evaluate: its text, the reference answer, and where it came from."""

    problem: str
    answer: str
    line: int | None = None  # line number in the JSONL file it was read from


def as_problem(item: Any) -> Problem:
    """A :class:`Problem` from a ``{"problem", "answer"}`` mapping, a ``(problem, answer)`` pair
    or an object with ``.question`` and ``.answer`` (a :class:`reasoning.curriculum.Problem`)."""
    if isinstance(item, Problem):
        return item
    if isinstance(item, Mapping):
        text, answer = item.get("problem"), item.get("answer")
    elif hasattr(item, "question") and hasattr(item, "answer"):
        text, answer = item.question, item.answer
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        text, answer = item
    else:
        raise ValueError(f"expected {{'problem': ..., 'answer': ...}} or (problem, answer), got {item!r:.80}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError('"problem" must be a non-empty string')
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or (isinstance(answer, float)
                                                                                 and not math.isfinite(answer)):
        raise ValueError('"answer" must be a string or a number')
    if isinstance(answer, str) and not answer.strip():
        raise ValueError('"answer" must not be empty')
    return Problem(text, str(answer))


def read_problems(path: str | os.PathLike[str], *, limit: int | None = None,
                  on_error: Callable[[int, str], None] | None = None) -> list[Problem]:
    """Read a JSONL file of ``{"problem": str, "answer": str | number}`` objects.

    Blank lines are skipped. A line that is not UTF-8, not JSON, or not such an object is
    reported as ``on_error(line_number, message)`` (default: printed to stderr as
    ``path:line: message``) and skipped. ``limit`` keeps the first ``limit`` valid problems.

    Raises:
        FileNotFoundError / IsADirectoryError: the file cannot be opened.
    """
    if on_error is None:
        def on_error(line: int, message: str) -> None:
            print(f"{os.fspath(path)}:{line}: {message}", file=sys.stderr)
    problems = []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if limit is not None and len(problems) >= limit:
                break
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                on_error(number, f"not UTF-8 text ({e.reason} at byte {e.start}); skipped")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                on_error(number, f"not valid JSON: {e.msg} (column {e.colno}); skipped")
                continue
            if not isinstance(record, dict):
                on_error(number, f'expected a JSON object {{"problem": ..., "answer": ...}}, got '
                                 f"{type(record).__name__}; skipped")
                continue
            missing = [key for key in ("problem", "answer") if key not in record]
            if missing:
                on_error(number, f"missing {' and '.join(repr(k) for k in missing)}; skipped")
                continue
            try:
                problem = as_problem(record)
            except ValueError as e:
                on_error(number, f"{e}; skipped")
                continue
            problems.append(Problem(problem.problem, problem.answer, number))
    return problems


@dataclass
class Evaluation:
    """k samples for each of n problems, and the scores."""

    problems: list[Problem]
    results: list[list[Result]]  # [problem][sample]
    k: int
    seconds: float = 0.0  # wall time of all the batches (prefill + decode)
    decode_seconds: float = 0.0  # summed over batches
    majority: list[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.majority = [majority_vote([r.answer for r in samples]) for samples in self.results]

    @property
    def n(self) -> int:
        return len(self.problems)

    @property
    def pass_at_1(self) -> float:
        """Mean over problems of the fraction of correct samples."""
        return _mean([pass_at_1([bool(r.correct) for r in samples]) for samples in self.results])

    @property
    def maj_at_k(self) -> float:
        """Fraction of problems whose majority answer over the k samples is correct."""
        return _mean([float(maj_at_k([r.answer for r in samples], p.answer))
                      for p, samples in zip(self.problems, self.results)])

    @property
    def generated_tokens(self) -> int:
        return sum(r.stats.generated_tokens for samples in self.results for r in samples)

    @property
    def mean_generated_tokens(self) -> float:
        return self.generated_tokens / max(1, self.n * self.k)

    @property
    def tokens_per_second(self) -> float | None:
        """Decode throughput over all batches: tokens sampled after each row's first (which comes
        from the prefill) per second of decoding."""
        decoded = sum(max(0, r.stats.generated_tokens - 1) for samples in self.results for r in samples)
        return decoded / self.decode_seconds if self.decode_seconds > 0 else None

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "k": self.k, "pass@1": self.pass_at_1, f"maj@{self.k}": self.maj_at_k,
                "mean_generated_tokens": self.mean_generated_tokens, "tokens_per_second": self.tokens_per_second,
                "seconds": self.seconds}

    def table(self) -> str:
        """The scores as a small text table."""
        rate = self.tokens_per_second
        header = ["n", "k", "pass@1", f"maj@{self.k}", "mean gen tokens", "tokens/s"]
        row = [str(self.n), str(self.k), f"{self.pass_at_1:.3f}", f"{self.maj_at_k:.3f}",
               f"{self.mean_generated_tokens:.1f}", "-" if rate is None else f"{rate:.1f}"]
        widths = [max(len(h), len(c)) for h, c in zip(header, row)]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in (header, row))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def evaluate(engine: ReasoningEngine, problems: Iterable[Any], *, k: int = 1, batch_size: int = 8,
             system: str | None = None, stop: Sequence[str] = (), progress: bool | None = None,
             on_result: Callable[[int, int, Result], None] | None = None, seed: int | None = None,
             **sampling: Any) -> Evaluation:
    """Solve every problem ``k`` times (sample ``j`` with seed ``seed + j``) and score them.

    Args:
        problems: :class:`Problem` s, ``{"problem", "answer"}`` mappings, ``(problem, answer)``
            pairs or curriculum problems.
        k: samples per problem (pass@1 is averaged over them; maj@k votes over them).
        batch_size: requests in flight at once (a new one joins as one finishes).
        on_result: ``on_result(problem_index, sample_index, result)`` as each batch finishes
            (to write generations as they come), as each finishes.
        seed, **sampling: sampling settings (None: the engine's defaults).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    problems = [as_problem(p) for p in problems]
    base = engine.sampling(seed=seed, **sampling)
    jobs = [(i, j) for i in range(len(problems)) for j in range(k)]
    results: list[list[Result | None]] = [[None] * k for _ in problems]
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(desc=f"evaluating {len(problems)} problems x {k}", unit="tok", disable=not show,
              dynamic_ncols=True) as bar:
        def record(index: int, result: Result) -> None:
            i, j = jobs[index]
            result = result.with_reference(problems[i].answer)
            results[i][j] = result
            if on_result is not None:
                on_result(i, j, result)
            done = sum(all(r is not None for r in samples) for samples in results)
            bar.set_postfix(problems=f"{done}/{len(problems)}")

        t0 = time.perf_counter()
        engine.run([(problems[i].problem, replace(base, seed=base.seed + j)) for i, j in jobs], system=system,
                   stop=stop, on_result=record, progress=bar, in_flight=batch_size)
        seconds = time.perf_counter() - t0
    # Requests overlap: decode time is the wall time less the first request's prefill.
    first = min((r for samples in results for r in samples), key=lambda r: r.stats.prefill_seconds, default=None)
    decode_seconds = seconds - (first.stats.prefill_seconds if first is not None else 0.0)
    return Evaluation(problems, results, k, seconds=seconds, decode_seconds=decode_seconds)  # type: ignore[arg-type]
