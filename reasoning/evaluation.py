"""Evaluation over problems with reference answers: K samples per problem through the
continuous engine, graded with math-verify, scored (pass@1, the unbiased pass@k for k up to K,
maj@K, lengths, truncation); resumable from a run folder and data-parallel under ``torchrun``.

    from reasoning import evaluate, read_problems
    ev = evaluate(read_problems("aime24.jsonl"), "path/to/model", k=64, out="runs/aime24")
    print(ev.table())

With ``out=DIR`` every generation is appended to a JSONL file as it finishes and the run's
settings are kept in ``DIR/run.json``: calling again with the same settings runs only the
(problem, sample) pairs that are missing (a half-written last line is redone), a call with other
settings is refused. At the end ``DIR`` holds ``generations.jsonl`` (sorted by problem, then
sample), ``summary.json`` and ``report.png``.

Under ``torch.distributed`` (``torchrun --nproc-per-node G -m reasoning eval ...``) the missing
pairs are dealt out to the ranks, each rank appends to its own ``generations.rank<R>.jsonl``,
rank 0 shows one progress bar for the whole job (counts gathered with all-reduces on a gloo
group) and merges the shards into one ``generations.jsonl`` and one summary.

Problem files are JSONL, one ``{"problem" (or "question"): ..., "answer": ...}`` object per line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .answers import grade, majority_vote, pass_at_k
from .api import Model, engine_for

__all__ = ["Evaluation", "Problem", "Sample", "as_problem", "evaluate", "init_distributed", "read_problems",
           "write_report"]

SETTINGS_FILE = "run.json"
GENERATIONS_FILE = "generations.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.png"


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A problem to evaluate: its text, the reference answer, and where it came from."""

    problem: str
    answer: str
    line: int | None = None  # line number in the JSONL file it was read from


def as_problem(item: Any) -> Problem:
    """A :class:`Problem` from a ``{"problem" | "question", "answer"}`` mapping, a
    ``(problem, answer)`` pair or an object with ``.question`` and ``.answer`` (a
    :class:`reasoning.curriculum.Problem`)."""
    if isinstance(item, Problem):
        return item
    if isinstance(item, Mapping):
        text, answer = item.get("problem", item.get("question")), item.get("answer")
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
    """Read a JSONL file of ``{"problem" | "question": str, "answer": str | number}`` objects.

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
            missing = [key for key in ("problem", "answer") if key not in record
                       and not (key == "problem" and "question" in record)]
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


# --------------------------------------------------------------------------------------------
# Samples and scores
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One generation of an evaluation, as written to ``generations.jsonl``."""

    problem: int  # index of the problem in the evaluated list
    sample: int  # 0 .. k-1
    seed: int  # the sampling seed: seed + sample
    text: str
    answer: str | None  # the last \boxed{} (None without one)
    reference: str
    correct: bool | None  # None: grading timed out (counts as wrong; regraded when the run is summarized)
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str  # stop / length / abort / error
    error: str | None = None
    line: int | None = None  # line of the problem in its JSONL file

    @classmethod
    def from_json(cls, line: str) -> Sample:
        record = json.loads(line)
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def _percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))


@dataclass
class Evaluation:
    """k samples for each of n problems, and the scores.

    ``settings`` are the run's (model, k, sampling, ...); ``timing`` says what this call ran:
    generations, tokens, wall seconds (a resumed run counts only its own part)."""

    problems: list[Problem]
    k: int
    samples: list[list[Sample]]  # [problem][sample]
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    majority: list[str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.majority = [majority_vote([s.answer for s in row]) for row in self.samples]

    @property
    def n(self) -> int:
        return len(self.problems)

    def _flat(self) -> list[Sample]:
        return [s for row in self.samples for s in row]

    def correct_counts(self) -> list[int]:
        return [sum(1 for s in row if s.correct) for row in self.samples]

    def pass_at(self, k: int) -> float:
        """The unbiased pass@k (Chen et al. 2021) over the K samples, averaged over problems."""
        counts = self.correct_counts()
        return sum(pass_at_k(self.k, c, k) for c in counts) / len(counts) if counts else 0.0

    @property
    def pass_at_1(self) -> float:
        """Mean over problems of the fraction of correct samples."""
        return self.pass_at(1)

    @property
    def maj_at_k(self) -> float:
        """Fraction of problems whose majority answer over the K samples is correct."""
        verdicts = grade([(vote, p.answer) for vote, p in zip(self.majority, self.problems)])
        return sum(1 for v in verdicts if v) / self.n if self.n else 0.0

    def summary(self) -> dict[str, Any]:
        """What ``summary.json`` holds."""
        flat = self._flat()
        lengths = [s.generated_tokens for s in flat]
        counts = self.correct_counts()
        out: dict[str, Any] = {"problems": self.n, "k": self.k, "samples": len(flat)}
        out.update({f"pass@{k}": self.pass_at(k) for k in range(1, self.k + 1)})
        out[f"maj@{self.k}"] = self.maj_at_k
        out["length"] = {"mean": sum(lengths) / len(lengths) if lengths else 0.0,
                         **{f"p{q}": _percentile(lengths, q) for q in (50, 90, 99)},
                         "max": max(lengths, default=0),
                         "limit": self.settings.get("sampling", {}).get("max_new_tokens")}
        out["truncated"] = sum(1 for s in flat if s.finish_reason == "length") / len(flat) if flat else 0.0
        out["finish_reasons"] = {r: sum(1 for s in flat if s.finish_reason == r)
                                 for r in sorted({s.finish_reason for s in flat})}
        out["grading_timeouts"] = sum(1 for s in flat if s.correct is None)
        out["per_problem"] = [{"problem": i, "line": p.line, "reference": p.answer, "correct": c,
                               "majority": vote, "mean_tokens": sum(s.generated_tokens for s in row) / len(row)}
                              for i, (p, row, c, vote) in enumerate(zip(self.problems, self.samples, counts,
                                                                        self.majority))]
        out["settings"] = self.settings
        out["timing"] = self.timing
        return out

    def table(self) -> str:
        """The scores as a small text table."""
        ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, self.k) if k <= self.k})
        s = self.summary()
        header = ["problems", "k", *[f"pass@{k}" for k in ks], f"maj@{self.k}", "mean len", "p50", "p90",
                  "truncated", "tokens/s"]
        rate = self.timing.get("tokens_per_second")
        row = [str(self.n), str(self.k), *[f"{s[f'pass@{k}']:.3f}" for k in ks], f"{s[f'maj@{self.k}']:.3f}",
               f"{s['length']['mean']:.1f}", f"{s['length']['p50']:.0f}", f"{s['length']['p90']:.0f}",
               f"{s['truncated']:.1%}", "-" if rate is None else f"{rate:.1f}"]
        widths = [max(len(h), len(c)) for h, c in zip(header, row)]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in (header, row))


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


class RunDir:
    """A run folder: its settings, the generation shards, the merged results."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def shard(self, rank: int, world: int) -> Path:
        """The file rank ``rank`` appends to: ``generations.jsonl`` alone, else its own shard."""
        return self.path / (GENERATIONS_FILE if world == 1 else f"generations.rank{rank}.jsonl")

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("generations*.jsonl") if p.is_file())

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Write ``run.json``, or check that the run there has these settings (ValueError if not)."""
        self.path.mkdir(parents=True, exist_ok=True)
        file = self.path / SETTINGS_FILE
        if not file.exists():
            tmp = file.with_suffix(".tmp")
            tmp.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            tmp.replace(file)
            return
        try:
            stored = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{file} is not a run's settings ({e}); use another --out folder") from None
        if stored != settings:
            diffs = [f"{key}: {stored.get(key)!r} there, {settings.get(key)!r} now"
                     for key in sorted(set(stored) | set(settings)) if stored.get(key) != settings.get(key)]
            raise ValueError(f"{self.path} holds a run with other settings ({'; '.join(diffs)}): "
                             "rerun with the same settings to resume it, or use another --out folder")

    @staticmethod
    def cut_partial_line(file: Path) -> None:
        """Drop a half-written last line (a run killed while writing), so appending starts clean."""
        if not file.exists():
            return
        with open(file, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)

    def load(self, n: int, k: int) -> dict[tuple[int, int], Sample]:
        """The finished (problem, sample) pairs of every file; lines that are not whole records
        (a half-written last line) are ignored, so their pairs run again."""
        done: dict[tuple[int, int], Sample] = {}
        for file in self.files():
            with open(file, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.endswith("\n"):
                        continue
                    try:
                        s = Sample.from_json(line)
                        if 0 <= s.problem < n and 0 <= s.sample < k:
                            done.setdefault((s.problem, s.sample), s)
                    except (json.JSONDecodeError, TypeError):  # not a whole record
                        continue
        return done

    def merge(self, samples: list[list[Sample]]) -> None:
        """Write every sample to ``generations.jsonl`` (in order) and remove the rank shards."""
        file = self.path / GENERATIONS_FILE
        tmp = file.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in samples:
                for s in row:
                    f.write(s.to_json() + "\n")
        tmp.replace(file)
        for shard in self.files():
            if shard != file:
                shard.unlink()


# --------------------------------------------------------------------------------------------
# torch.distributed
# --------------------------------------------------------------------------------------------


def init_distributed(device: str | None = None) -> tuple[str | None, int, int]:
    """Join the job ``torchrun`` started (from its environment: ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``), if any. Each rank gets GPU ``cuda:LOCAL_RANK``
    (NCCL) when CUDA is there and ``device`` does not say cpu, else the CPU (gloo).

    Returns ``(device, rank, world_size)``; without torchrun ``(device, 0, 1)`` and nothing started.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return device, (dist.get_rank() if dist.is_initialized() else 0), max(1, world)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and not (device or "").startswith("cpu")
    if cuda:
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    else:
        device = "cpu"
    dist.init_process_group("nccl" if cuda else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


class _Progress:
    """One progress bar for the whole job, on rank 0: a thread on every rank all-reduces
    (generations done, tokens, finished ranks) on a gloo group about twice a second."""

    def __init__(self, total: int, done: int, show: bool, world: int) -> None:
        self.world = world
        self.local = [0, 0]  # generations, tokens finished on this rank (this call)
        self.finished = threading.Event()
        self.bar = tqdm(total=total, initial=done, desc="evaluating", unit="gen", disable=not show,
                        dynamic_ncols=True)
        self.done0 = done
        self.thread = None
        if world > 1:
            self.group = dist.new_group(backend="gloo")
            self.thread = threading.Thread(target=self._gather, name="eval-progress", daemon=True)
            self.thread.start()

    def update(self, tokens: int) -> None:
        self.local[0] += 1
        self.local[1] += tokens
        if self.thread is None:
            self.bar.update(1)
            self.bar.set_postfix(tokens=self.local[1])

    def _gather(self) -> None:
        while True:
            t = torch.tensor([self.local[0], self.local[1], int(self.finished.is_set())], dtype=torch.int64)
            dist.all_reduce(t, group=self.group)
            gens, tokens, finished = t.tolist()
            self.bar.n = self.done0 + gens
            self.bar.set_postfix(tokens=tokens, refresh=False)
            self.bar.refresh()
            if finished == self.world:  # every rank sees the same sum: they all stop together
                return
            time.sleep(0.5)

    def close(self) -> None:
        self.finished.set()
        if self.thread is not None:
            self.thread.join()
            dist.destroy_process_group(self.group)
        self.bar.close()


def _all_ok(ok: bool, world: int) -> bool:
    """Whether every rank is ok (so that one failing rank does not leave the others waiting)."""
    if world == 1:
        return ok
    t = torch.tensor([0 if ok else 1], dtype=torch.int64)
    dist.all_reduce(t, group=_cpu_group())
    return int(t) == 0


_CPU_GROUP: list[Any] = []


def _cpu_group() -> Any:
    """A gloo group for small CPU tensors and objects (the default group may be NCCL)."""
    if not _CPU_GROUP:
        _CPU_GROUP.append(dist.new_group(backend="gloo"))
    return _CPU_GROUP[0]


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------


def _settings(engine: Any, problems: list[Problem], k: int, params: Any, system: str | None,
              stop: Sequence[str]) -> dict[str, Any]:
    """What determines a run's results: a rerun into the same folder must have the same."""
    digest = hashlib.sha256(json.dumps([[p.problem, p.answer] for p in problems]).encode()).hexdigest()
    return {"model": str(engine.path) if engine.path is not None else type(engine.model).__name__,
            "dtype": str(engine.model.dtype).removeprefix("torch."), "k": k, "sampling": asdict(params),
            "system": system, "stop": list(stop), "problems": len(problems), "problems_sha256": digest}


def evaluate(problems: Iterable[Any], model: Model = None, *, k: int = 1, out: str | os.PathLike[str] | None = None,
             system: str | None = None, stop: Sequence[str] = (), progress: bool | None = None,
             on_result: Callable[[Sample], None] | None = None, seed: int | None = None,
             **sampling: Any) -> Evaluation:
    """Solve every problem ``k`` times (sample ``j`` with seed ``seed + j``) and score them.

    Every (problem, sample) pair goes through :meth:`ReasoningEngine.run` (the continuous
    engine) and is graded with math-verify as it finishes.

    Args:
        problems: :class:`Problem` s, ``{"problem" | "question", "answer"}`` mappings,
            ``(problem, answer)`` pairs or curriculum problems.
        model: None (the built-in model), a checkpoint folder or a :class:`ReasoningEngine`.
        k: samples per problem.
        out: a run folder (see the module docstring): resumable, with ``generations.jsonl``,
            ``summary.json`` and ``report.png`` at the end. None keeps everything in memory.
        progress: a progress bar on stderr (rank 0; None: on a terminal).
        on_result: ``on_result(sample)`` as each generation of this rank is graded (called from
            the one thread that grades and writes, beside the engine's loop).
        seed, **sampling: sampling settings (None: the engine's defaults).

    Under ``torch.distributed`` every rank calls this with the same arguments; each runs its
    share of the pairs and every rank returns the whole evaluation.

    Raises:
        ValueError: bad settings, a prompt that does not fit, or ``out`` holding a run with
            other settings.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    problems = [as_problem(p) for p in problems]
    engine = engine_for(model)
    base = engine.sampling(seed=seed, **sampling)
    settings = _settings(engine, problems, k, base, system, stop)
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
    run = RunDir(out) if out is not None else None
    start = time.perf_counter()

    error: Exception | None = None
    done: dict[tuple[int, int], Sample] = {}
    if run is not None:  # rank 0 checks the settings; every rank then reads what is done
        if rank == 0:
            try:
                run.check_settings(settings)
            except (ValueError, OSError) as e:
                error = e
        if not _all_ok(error is None, world):
            raise error or ValueError(f"{run.path}: rank 0 refused the run folder (see its message)")
        run.cut_partial_line(run.shard(rank, world))
        if world > 1:
            dist.barrier(group=_cpu_group())
        done = run.load(len(problems), k)
        if world > 1:
            dist.barrier(group=_cpu_group())  # nobody appends before everybody has read
    missing = [(i, j) for i in range(len(problems)) for j in range(k) if (i, j) not in done]
    mine = missing[rank::world]

    show = rank == 0 and (sys.stderr.isatty() if progress is None else progress)
    bar = _Progress(len(problems) * k, len(done), show, world)
    local: list[Sample] = []
    shard = open(run.shard(rank, world), "a", encoding="utf-8") if run is not None else None
    # Grading and writing happen on one thread beside the engine's loop, so that a slow comparison
    # (up to the grading deadline) never stalls generation; one thread keeps the writes in order.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-grade")
    pending: list[Future] = []

    def record(i: int, j: int, result: Any) -> None:
        p = problems[i]
        (verdict,) = grade([(result.answer, p.answer)])
        s = Sample(problem=i, sample=j, seed=base.seed + j, text=result.text, answer=result.answer,
                   reference=p.answer, correct=verdict, prompt_tokens=result.stats.prompt_tokens,
                   generated_tokens=result.stats.generated_tokens, finish_reason=result.stats.finish_reason,
                   error=result.stats.error, line=p.line)
        if shard is not None:
            shard.write(s.to_json() + "\n")
            shard.flush()
        local.append(s)
        bar.update(s.generated_tokens)
        if on_result is not None:
            on_result(s)

    try:
        items = [(problems[i].problem, replace(base, seed=base.seed + j)) for i, j in mine]
        engine.run(items, system=system, stop=stop, progress=False,
                   on_result=lambda index, result: pending.append(writer.submit(record, *mine[index], result)))
    except Exception as e:  # told to the other ranks before anyone waits for this one
        error = e
    finally:
        writer.shutdown(wait=True)  # what finished is graded and written, also after an error
        for future in pending:
            if error is None and future.exception() is not None:
                error = future.exception()  # type: ignore[assignment]
        if shard is not None:
            shard.close()
        bar.close()
    if not _all_ok(error is None, world):
        raise error or RuntimeError("another rank failed (see its message)")

    ran = torch.tensor([len(local), sum(s.generated_tokens for s in local)], dtype=torch.int64)
    if world > 1:
        dist.all_reduce(ran, group=_cpu_group())
    seconds = time.perf_counter() - start
    timing = {"generations_run": int(ran[0]), "tokens_generated": int(ran[1]), "seconds": round(seconds, 3),
              "tokens_per_second": int(ran[1]) / seconds if int(ran[0]) else None, "ranks": world}

    if run is None:
        gathered: list[list[Sample]] = [local]
        if world > 1:
            gathered = [[] for _ in range(world)]
            dist.all_gather_object(gathered, local, group=_cpu_group())
        table = {(s.problem, s.sample): s for part in gathered for s in part}
    else:
        if world > 1:
            dist.barrier(group=_cpu_group())  # every shard is complete
        table = run.load(len(problems), k)
        if world > 1:
            dist.barrier(group=_cpu_group())  # everybody has read the shards before rank 0 merges them
    samples = _complete(table, len(problems), k)
    evaluation = Evaluation(problems, k, samples, settings, timing)
    if run is not None:
        if rank == 0:
            run.merge(samples)
            summary = evaluation.summary()
            (run.path / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
            try:
                write_report(evaluation, run.path / REPORT_FILE)
            except ImportError:  # matplotlib is optional (the "plot" extra)
                print(f"no {REPORT_FILE}: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        if world > 1:
            dist.barrier(group=_cpu_group())  # the merged folder is in place when evaluate returns
    return evaluation


def _complete(table: dict[tuple[int, int], Sample], n: int, k: int) -> list[list[Sample]]:
    """The samples as [problem][sample]; a grading that had timed out is tried again."""
    missing = [(i, j) for i in range(n) for j in range(k) if (i, j) not in table]
    if missing:
        raise RuntimeError(f"{len(missing)} generations are missing after the run, e.g. (problem, sample) "
                           f"{missing[0]}")
    retry = [key for key, s in table.items() if s.correct is None]
    for key, verdict in zip(retry, grade([(table[key].answer, table[key].reference) for key in retry])):
        table[key] = replace(table[key], correct=verdict)
    return [[table[i, j] for j in range(k)] for i in range(n)]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def write_report(evaluation: Evaluation, path: str | os.PathLike[str]) -> None:
    """``report.png``: accuracy per problem, the length histogram with the generation limit
    marked, and accuracy against length (samples binned by their length)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ev = evaluation
    flat = [s for row in ev.samples for s in row]
    limit = ev.settings.get("sampling", {}).get("max_new_tokens")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))

    ax = axes[0]
    accuracy = [c / ev.k for c in ev.correct_counts()]
    ax.bar(range(ev.n), accuracy, color=[plt.cm.RdYlGn(a) for a in accuracy], edgecolor="gray", linewidth=0.3)
    zero = [i for i, a in enumerate(accuracy) if a == 0]
    ax.plot(zero, [0.01] * len(zero), "x", color="tab:red")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(title=f"accuracy per problem (pass@1 {ev.pass_at_1:.3f}, k={ev.k})",
           xlabel=f"problem (x: none correct, {len(zero)} of {ev.n})", ylabel="fraction of samples correct",
           ylim=(0, 1.05))

    ax = axes[1]
    lengths = [s.generated_tokens for s in flat]
    top = max(lengths + ([limit] if limit else []), default=1)
    bins = [top * b / 40 for b in range(41)]  # the limit (when reached) is the last edge
    ok = [s.generated_tokens for s in flat if s.correct]
    bad = [s.generated_tokens for s in flat if not s.correct]
    ax.hist([ok, bad], bins=bins, stacked=True, color=["tab:green", "tab:red"], label=["correct", "wrong"])
    if limit:
        truncated = sum(1 for s in flat if s.finish_reason == "length") / max(1, len(flat))
        ax.axvline(limit, color="black", linestyle="--", label=f"limit {limit} ({truncated:.1%} truncated)")
    ax.set(title="generated tokens per sample", xlabel="tokens", ylabel="samples")
    ax.legend()

    ax = axes[2]
    edges = sorted({_percentile(lengths, q) for q in range(0, 101, 10)})
    xs, ys = [], []
    for b, (lo, hi) in enumerate(zip(edges, edges[1:] or edges)):
        last = b == len(edges) - 2 or len(edges) == 1
        members = [s for s in flat if lo <= s.generated_tokens and (s.generated_tokens < hi or last
                                                                     and s.generated_tokens <= hi)]
        if members:
            xs.append(sum(s.generated_tokens for s in members) / len(members))
            ys.append(sum(1 for s in members if s.correct) / len(members))
    ax.plot(xs, ys, marker="o")
    ax.set(title="accuracy against length (samples in length deciles)", xlabel="mean generated tokens of the bin",
           ylabel="fraction correct", ylim=(-0.05, 1.05))
    fig.suptitle(f"{ev.settings.get('model', '')}: {ev.n} problems x {ev.k} samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
