r"""Answer grading with Hugging Face's ``math-verify``, bounded in time and deterministic,
wherever it is called from (the main thread, a server's threads, a ``torchrun`` rank).

math-verify (``math_verify.parse`` / ``verify``, over ``latex2sympy2-extended``) is what the
community grades MATH / AIME-style answers with. Its own timeouts use ``signal.alarm``: they
work only in the main thread of the main interpreter, and they cannot interrupt a computation
stuck inside C (a big-integer power). So grading never runs in the caller's process: a small
pool of worker processes (this file run as a script, stdlib + math-verify only) grades one
``(prediction, reference)`` pair at a time each, in their main thread, where math-verify's
alarms work; the pool kills a worker that overruns its deadline and starts a fresh one.

A comparison that runs out of time is retried once, in a fresh worker, with twice the
deadline; if that runs out too, its verdict is ``None`` ("timed out"), never ``False``, and it
is never cached (only ``True`` / ``False`` verdicts are). The verdict of a pair depends only
on the two strings, not on the thread, the number of workers or the rest of the batch; only a
comparison that needs about as long as its deadline could go either way on a loaded machine,
which the retry with twice the time makes unlikely.

What this adds to math-verify, each piece for a reason that its test states:

* identical answers match without parsing (math-verify cannot parse a number of more than
  4300 digits, Python's int conversion limit, and would call ``"9" * 5000`` unequal to itself);
* three LaTeX spellings math-verify misreads are rewritten first (:func:`prepare_answer`):
  ``\varnothing`` (read as a variable), digit groups separated by ``\,`` (``1\,000`` read as
  ``1*0``) and ``\frac`` / ``\dfrac`` / ``\tfrac`` with a control word as a brace-less argument
  (``\frac\pi2``).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # run as the worker script: do not let reasoning/*.py shadow top-level modules
    import os

    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)

import atexit
import json
import math
import os
import re
import selectors
import subprocess
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["GRADING_TIMEOUT_S", "Grader", "default_grader", "prepare_answer"]

#: Seconds one comparison may take in a worker before it is cut off (the retry gets twice that).
GRADING_TIMEOUT_S: float = 5.0
_START_TIMEOUT_S = 120.0  # a worker imports sympy and math-verify: seconds on a loaded machine

# --------------------------------------------------------------------------------------------
# What math-verify misreads (applied to both sides before parsing)
# --------------------------------------------------------------------------------------------

_VARNOTHING_RE = re.compile(r"\\varnothing(?![A-Za-z])")
_THIN_SPACE_GROUP_RE = re.compile(r"(?<=\d)\\,(?=\d{3}(?!\d))")
_ARG = r"\s*(\\[A-Za-z]+(?![A-Za-z])|[A-Za-z0-9]|\{[^{}]*\})"  # a control word, one character, a group
_FRAC_RE = re.compile(r"\\([dt]?frac)" + _ARG + _ARG)


def _brace_frac(m: re.Match[str]) -> str:
    """``\\frac\\pi2`` -> ``\\frac{\\pi}{2}``; fractions without a bare control word stay as they are."""
    args = m.group(2), m.group(3)
    if not any(a.startswith("\\") for a in args):
        return m.group(0)
    return f"\\{m.group(1)}" + "".join(a if a.startswith("{") else "{" + a + "}" for a in args)


def prepare_answer(answer: str) -> str:
    r"""The answer as math-verify reads it right: ``\varnothing`` -> ``\emptyset``,
    ``1\,000`` -> ``1000``, ``\frac\pi2`` -> ``\frac{\pi}{2}``; newlines become spaces (the
    answer is parsed as one inline formula)."""
    answer = _VARNOTHING_RE.sub(r"\\emptyset", answer)
    answer = _THIN_SPACE_GROUP_RE.sub("", answer)
    answer = _FRAC_RE.sub(_brace_frac, answer)
    return " ".join(answer.split())


# --------------------------------------------------------------------------------------------
# The worker (this file run as a script): JSON lines in, JSON lines out
# --------------------------------------------------------------------------------------------


def _serve() -> None:
    """Read ``{"id", "prediction", "reference", "seconds"}`` lines on stdin, write
    ``{"id", "verdict": true | false | "timeout"}`` lines on stdout."""
    import logging
    from functools import lru_cache
    from itertools import product

    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    @lru_cache(maxsize=4096)  # a timeout raises, so it is never cached
    def parsed(answer: str, seconds: int) -> tuple:
        try:
            return tuple(parse(f"${prepare_answer(answer)}$", parsing_timeout=seconds, raise_on_error=True))
        except Exception:  # unparseable: nothing extracted, as math-verify's own default does
            return ()

    def verdict(prediction: str, reference: str, seconds: int) -> bool | str:
        try:
            gold, target = parsed(reference, seconds), parsed(prediction, seconds)
        except TimeoutException:
            return "timeout"
        timed_out = False
        for g, t in product(gold, target):  # math-verify's verify(gold, target), timeouts told apart
            try:
                if verify(g, t, timeout_seconds=seconds, raise_on_error=True):
                    return True
            except TimeoutException:
                timed_out = True
            except Exception:
                pass
        return "timeout" if timed_out else False

    sys.stdout.write(json.dumps({"ready": True}) + "\n")  # math-verify imported: the pool may send jobs
    sys.stdout.flush()
    for line in sys.stdin:
        job = json.loads(line)
        seconds = max(1, math.ceil(job["seconds"] / 4))  # math-verify's alarms: whole seconds, per call
        result = {"id": job["id"], "verdict": verdict(job["prediction"], job["reference"], seconds)}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------------------------


class _Worker:
    """One grading process and the job it is working on."""

    def __init__(self) -> None:
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty worker can never block on it
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.job: int | None = None  # index of the pair being graded
        self.deadline = 0.0
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            ready = selector.select(_START_TIMEOUT_S) and self.proc.stdout.readline()
        if not ready:
            self.proc.kill()
            self.proc.wait()
            self.stderr.seek(0)
            tail = self.stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            self.kill()
            raise RuntimeError(f"the grading worker ({__file__}) did not start: " + (" | ".join(tail) or "no output"))

    def send(self, job: int, prediction: str, reference: str, seconds: float) -> None:
        self.job, self.deadline = job, time.monotonic() + seconds
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": job, "prediction": prediction, "reference": reference,
                                          "seconds": seconds}) + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.stderr):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:  # a broken pipe on flush
                pass


class Grader:
    """A pool of grading processes (see the module docstring).

    Args:
        workers: processes (default: up to 4, at most the CPU count); started on first use.
        timeout: seconds one comparison may take (the retry gets twice that).
        cache_size: ``(prediction, reference)`` verdicts kept (``True`` / ``False`` only).

    Thread-safe: concurrent calls take turns.
    """

    def __init__(self, workers: int | None = None, timeout: float = GRADING_TIMEOUT_S,
                 cache_size: int = 65536) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.timeout = timeout
        self._cache: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._cache_size = cache_size
        self._pool: list[_Worker] = []
        self._lock = threading.Lock()
        self.timeouts = 0  # comparisons whose final verdict was "timed out", over this grader's life

    def grade(self, pairs: Sequence[tuple[str, str]]) -> list[bool | None]:
        """Verdicts for ``(prediction, reference)`` string pairs: True (equivalent), False, or
        None (timed out twice)."""
        with self._lock:
            verdicts: list[bool | None] = [None] * len(pairs)
            todo: dict[tuple[str, str], list[int]] = {}
            for i, (prediction, reference) in enumerate(pairs):
                key = (prediction, reference)
                if prediction.strip() == reference.strip():
                    verdicts[i] = True
                elif key in self._cache:
                    self._cache.move_to_end(key)
                    verdicts[i] = self._cache[key]
                else:
                    todo.setdefault(key, []).append(i)
            keys = list(todo)
            for key, verdict in zip(keys, self._run(keys)):
                for i in todo[key]:
                    verdicts[i] = verdict
                if verdict is None:
                    self.timeouts += 1
                else:
                    self._cache[key] = verdict
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
            return verdicts

    def _run(self, keys: list[tuple[str, str]]) -> list[bool | None]:
        """Grade distinct pairs on the pool: one job per worker at a time, a deadline each."""
        results: list[bool | None] = [None] * len(keys)
        pending = [(i, 0) for i in reversed(range(len(keys)))]  # (job, attempt), popped from the end
        attempts = [0] * len(keys)
        busy: dict[int, _Worker] = {}  # fd -> worker
        selector = selectors.DefaultSelector()
        try:
            while pending or busy:
                while pending and len(busy) < self.workers:
                    job, attempt = pending.pop()
                    worker = self._pool.pop() if self._pool else _Worker()
                    attempts[job] = attempt
                    try:
                        worker.send(job, *keys[job], self.timeout * 2 ** attempt)
                    except OSError:  # the process died while idle: replace it
                        worker.kill()
                        pending.append((job, attempt))
                        continue
                    assert worker.proc.stdout is not None
                    busy[worker.proc.stdout.fileno()] = worker
                    selector.register(worker.proc.stdout, selectors.EVENT_READ)
                wait = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
                ready = {key.fd for key, _ in selector.select(wait)}
                now = time.monotonic()
                for fd, worker in list(busy.items()):
                    job = worker.job
                    assert job is not None and worker.proc.stdout is not None
                    answered = False
                    if fd in ready:
                        line = worker.proc.stdout.readline()
                        reply = json.loads(line) if line else None
                        answered = reply is not None and reply["id"] == job
                        if answered and reply["verdict"] != "timeout":
                            results[job] = bool(reply["verdict"])
                            self._release(selector, busy, fd, worker, keep=True)
                            continue
                    elif now < worker.deadline:
                        continue
                    # Timed out: in math-verify's alarm (the worker answered and is reused) or past
                    # our deadline, or the worker died (it is replaced: it may still be computing).
                    self._release(selector, busy, fd, worker, keep=answered)
                    if attempts[job] == 0:
                        pending.append((job, 1))
        finally:
            for fd, worker in list(busy.items()):
                self._release(selector, busy, fd, worker, keep=False)
            selector.close()
        return results

    def _release(self, selector: selectors.BaseSelector, busy: dict[int, _Worker], fd: int, worker: _Worker,
                 keep: bool) -> None:
        selector.unregister(worker.proc.stdout)  # type: ignore[arg-type]
        del busy[fd]
        worker.job = None
        if keep:
            self._pool.append(worker)
        else:  # a fresh process for the next job: the old one may still be computing
            worker.kill()

    def close(self) -> None:
        """Stop the worker processes (a later call starts new ones)."""
        with self._lock:
            while self._pool:
                self._pool.pop().kill()


_default: Grader | None = None
_default_lock = threading.Lock()


def default_grader() -> Grader:
    """The process-wide :class:`Grader` that :func:`reasoning.answers.answers_match` uses."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Grader()
            atexit.register(_default.close)
        return _default


if __name__ == "__main__":
    _serve()
