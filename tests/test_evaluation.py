"""Evaluation runs with the built-in model on CPU: the scores, the run folder (resuming, a
half-written line, settings that differ), and data parallelism under torchrun with gloo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest
import torch

from reasoning.cli import main
from reasoning.evaluation import Evaluation, Problem, RunDir, Sample

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "arithmetic_20.jsonl"
# 6 problems x 4 samples of at most 64 tokens, sampled hot enough that the seeds matter (the built-in
# model is so sure of itself that at temperature 1, or with top-p 0.95, its samples agree); CPU, fp32.
FLAGS = ["--k", "4", "--limit", "6", "--max-new-tokens", "64", "--temperature", "2.0", "--top-p", "1",
         "--device", "cpu"]
TOTAL = 6 * 4


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _eval_command(out: Path, ranks: int | None, *extra: str) -> list[str]:
    launcher = [] if ranks is None else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    return [sys.executable, *launcher, "-m", "reasoning", "eval", str(DATA), "--out", str(out), *FLAGS, *extra]


def _run(out: Path, ranks: int | None = None, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_eval_command(out, ranks, *extra), capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _ran_now(stdout: str) -> int:
    return int(re.search(r"(\d+) of (\d+) generations run now", stdout).group(1))


def _summary(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    del summary["timing"]  # wall time and what this call ran: the rest must not depend on how the run went
    return summary


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted one-process run (``python -m reasoning eval``, no torchrun)."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert _ran_now(_run(out).stdout) == TOTAL
    return out


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------


def _sample(i: int, j: int, answer: str | None, reference: str, correct: bool | None, tokens: int,
            finish: str = "stop") -> Sample:
    return Sample(problem=i, sample=j, seed=j, text=f"\\boxed{{{answer}}}", answer=answer, reference=reference,
                  correct=correct, prompt_tokens=5, generated_tokens=tokens, finish_reason=finish)


def test_scores() -> None:
    problems = [Problem("a", "42"), Problem("b", "7"), Problem("c", "1/2")]
    rows = [[("42", True, 10), ("41", False, 20), ("42.0", True, 30), (None, False, 100)],
            [("1", False, 100), ("7", True, 40), ("1", False, 100), ("1", False, 50)],
            [("0.5", True, 5), (r"\frac12", True, 6), ("2", False, 7), ("3", None, 8)]]
    samples = [[_sample(i, j, a, problems[i].answer, c, t, "length" if t == 100 else "stop")
                for j, (a, c, t) in enumerate(row)] for i, row in enumerate(rows)]
    ev = Evaluation(problems, 4, samples, {"sampling": {"max_new_tokens": 100}})
    correct = [[bool(c) for _, c, _ in row] for row in rows]
    for k in range(1, 5):  # pass@k: the chance that a random k-subset of the 4 samples has a correct one
        brute = [sum(any(row[j] for j in subset) for subset in combinations(range(4), k))
                 / len(list(combinations(range(4), k))) for row in correct]
        assert ev.pass_at(k) == pytest.approx(sum(brute) / 3)
    assert ev.pass_at_1 == pytest.approx((2 / 4 + 1 / 4 + 2 / 4) / 3)
    assert ev.majority == ["42", "1", "0.5"]  # 42 and 42.0 vote together; so do 0.5 and \frac12
    assert ev.maj_at_k == pytest.approx(2 / 3)
    s = ev.summary()
    lengths = sorted(t for row in rows for _, _, t in row)
    assert s["length"]["mean"] == pytest.approx(sum(lengths) / 12) and s["length"]["max"] == 100
    assert s["length"]["p50"] == pytest.approx((lengths[5] + lengths[6]) / 2) and s["length"]["limit"] == 100
    assert s["truncated"] == pytest.approx(3 / 12) and s["finish_reasons"] == {"length": 3, "stop": 9}
    assert s["grading_timeouts"] == 1 and [p["correct"] for p in s["per_problem"]] == [2, 1, 2]
    assert s["pass@4"] == pytest.approx(1.0) and s["maj@4"] == pytest.approx(2 / 3)
    table = ev.table()
    assert "pass@1" in table and "pass@4" in table and "maj@4" in table and "25.0%" in table


# ---------------------------------------------------------------------------------------------
# The run folder
# ---------------------------------------------------------------------------------------------


def test_a_half_written_line_is_ignored_and_cut(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    whole = [_sample(0, j, "1", "1", True, 3).to_json() + "\n" for j in range(3)]
    (tmp_path / "generations.jsonl").write_text(whole[0] + whole[1] + whole[2][:25])
    (tmp_path / "generations.rank1.jsonl").write_text(whole[2] + "{not json}\n")
    assert sorted(run.load(1, 3)) == [(0, 0), (0, 1), (0, 2)]  # the shard of rank 1 has sample 2
    (tmp_path / "generations.rank1.jsonl").unlink()
    assert sorted(run.load(1, 3)) == [(0, 0), (0, 1)]  # the cut line is not a result
    run.cut_partial_line(tmp_path / "generations.jsonl")
    assert (tmp_path / "generations.jsonl").read_text() == whole[0] + whole[1]


def test_the_same_command_resumes_and_other_settings_are_refused(reference: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    lines = (out / "generations.jsonl").read_text().splitlines(keepends=True)
    kept = 9  # an interrupted run: 9 whole lines, then half of the 10th
    (out / "generations.jsonl").write_text("".join(lines[:kept]) + lines[kept][: len(lines[kept]) // 2])
    (out / "summary.json").unlink()
    args = ["eval", str(DATA), "--out", str(out), *FLAGS]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference run (OMP_NUM_THREADS=1): the same float sums
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert _ran_now(capsys.readouterr().out) == TOTAL - kept
    assert (out / "generations.jsonl").read_text() == (reference / "generations.jsonl").read_text()
    assert _summary(out) == _summary(reference)

    assert main(args) == 0  # complete: nothing to run
    assert _ran_now(capsys.readouterr().out) == 0

    for flag, value, message in [("--k", "3", "k: 4 there, 3 now"), ("--temperature", "0.5", "'temperature': 2.0"),
                                 ("--limit", "5", "problems: 6 there, 5 now")]:
        changed = list(args)
        changed[changed.index(flag) + 1] = value
        assert main(changed) == 2
        err = capsys.readouterr().err
        assert err.startswith("sambay eval: error: ") and "holds a run with other settings" in err and message in err
    assert (out / "generations.jsonl").read_text() == (reference / "generations.jsonl").read_text()


def test_report_and_summary(reference: Path) -> None:
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["samples"] == TOTAL and summary["k"] == 4
    assert [f"pass@{k}" for k in range(1, 5)] == [key for key in summary if key.startswith("pass@")]
    assert summary["settings"]["sampling"]["seed"] == 0 and summary["length"]["limit"] == 64
    records = [json.loads(line) for line in (reference / "generations.jsonl").read_text().splitlines()]
    assert [(r["problem"], r["sample"]) for r in records] == [(i, j) for i in range(6) for j in range(4)]
    assert all(r["seed"] == r["sample"] and r["generated_tokens"] <= 64 for r in records)
    texts = [{r["text"] for r in records if r["problem"] == i} for i in range(6)]
    assert sum(len(t) for t in texts) >= 12  # the seeds give different samples: the comparisons below mean something
    assert 0 < summary["pass@1"] < 1
    assert {"text", "answer", "correct", "prompt_tokens", "generated_tokens", "finish_reason"} <= set(records[0])
    assert summary["pass@1"] == pytest.approx(sum(bool(r["correct"]) for r in records) / TOTAL)
    assert (reference / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# torchrun, gloo, 2 processes
# ---------------------------------------------------------------------------------------------


def test_two_ranks_give_the_one_process_results(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run(out, 2, "--progress")
    assert _ran_now(proc.stdout) == TOTAL and "on 2 rank(s)" in proc.stdout
    assert proc.stdout.count("pass@1") == 1  # one table, from rank 0
    bars = set(re.findall(r"evaluating: +\d+%\|[^|]*\| *(\d+)/(\d+)", proc.stderr))
    assert (str(TOTAL), str(TOTAL)) in bars and {total for _, total in bars} == {str(TOTAL)}  # one bar, the whole job
    assert not list(out.glob("generations.rank*.jsonl"))  # merged into generations.jsonl
    assert (out / "generations.jsonl").read_text() == (reference / "generations.jsonl").read_text()
    assert _summary(out) == _summary(reference)


def _whole_lines(out: Path) -> int:
    pairs = set()
    for file in out.glob("generations*.jsonl"):
        for line in file.read_text().splitlines(keepends=True):
            if line.endswith("\n"):
                record = json.loads(line)
                pairs.add((record["problem"], record["sample"]))
    return len(pairs)


def test_killed_midway_then_rerun_completes_only_what_is_missing(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # one request at a time per rank: records come one by one, seconds before the job would end
    # (in batches they came in bursts, and a job could finish before the kill landed)
    one = ("--max-batch-size", "1")
    job = subprocess.Popen(_eval_command(out, 2, *one), env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not out.exists() or _whole_lines(out) < 4:
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before it could be killed"
        time.sleep(0.01)
    job.send_signal(signal.SIGTERM)  # what a scheduler does: torchrun ends both ranks, mid-write perhaps
    job.wait(timeout=120)
    kept = _whole_lines(out)
    assert 4 <= kept < TOTAL
    proc = _run(out, 2, *one)
    assert _ran_now(proc.stdout) == TOTAL - kept
    assert (out / "generations.jsonl").read_text() == (reference / "generations.jsonl").read_text()
    assert _summary(out) == _summary(reference)
