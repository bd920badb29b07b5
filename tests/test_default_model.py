"""The built-in model shipped in reasoning/default_model/ (trained by examples/train_default.sh)."""

import pytest

import reasoning
from reasoning.cli import main as cli
from reasoning.curriculum import default_test_set


@pytest.fixture(scope="module")
def engine():
    return reasoning.load(device="cpu")


def test_default_model_is_small_and_in_the_official_layout():
    folder = reasoning.DEFAULT_MODEL_DIR
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 8 * 2**20


def test_solve_347_times_28(engine):
    result = reasoning.solve("What is 347 * 28?", engine, reference="9716")
    assert result.answer == "9716" and result.correct
    assert "347 * 8" in result.reasoning and "\\boxed{9716}" in result.text
    assert result.stats.finish_reason == "stop" and result.stats.generated_tokens > 50


def test_held_out_accuracy_on_a_fixed_sample(engine):
    """Greedy exact match on 48 of the 500 held-out problems (every 10th, all four kinds); the
    full 500 are scored by examples/train_default.py (99.8% for the shipped checkpoint)."""
    problems = default_test_set()[::10][:48]
    results = reasoning.solve_many([p.question for p in problems], engine,
                                   references=[p.answer for p in problems], batch_size=48)
    accuracy = sum(r.correct for r in results) / len(results)
    assert accuracy >= 0.90, [(p.question, r.answer) for p, r in zip(problems, results) if not r.correct]


def test_cli_ask_on_the_default_model(capsys):
    assert cli(["ask", "What is 56 + 78?", "--no-stream", "--device", "cpu"]) in (0, None)
    out = capsys.readouterr().out
    assert "134" in out


def test_cli_ask_with_fp8_weights_and_fp8_kv_cache(capsys):
    """The CLI's fp8 flags reach the model and the engine: the built-in model, quantized both
    ways, still answers."""
    assert cli(["ask", "What is 56 + 78?", "--no-stream", "--device", "cpu", "--quantize", "fp8",
                "--kv-cache-dtype", "fp8"]) in (0, None)
    assert "answer: 134" in capsys.readouterr().out


def test_stream_trace_shows_problems_the_model_was_trained_for(engine, monkeypatch, capsys):
    """examples/stream_trace.py by default: one held-out problem of each curriculum kind, each
    answered right by the built-in model, with the check against the reference printed."""
    import runpy
    import sys
    from pathlib import Path

    from reasoning.curriculum import KINDS, generate_problems, problem_key, split_of_key

    script = Path(__file__).resolve().parents[1] / "examples/stream_trace.py"
    module = runpy.run_path(str(script))
    problems = module["default_problems"]()
    drawn = generate_problems(len(KINDS), seed=7, split="test")
    assert problems == [(p.question, p.answer) for p in drawn]
    assert sorted(p.kind for p in drawn) == sorted(KINDS) and all(split_of_key(problem_key(p)) == "test" for p in drawn)
    monkeypatch.setattr(reasoning, "load", lambda *a, **k: engine)  # the module's engine, loaded once
    monkeypatch.setattr(sys, "argv", ["stream_trace.py"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    for question, answer in problems:
        assert f"Q: {question}" in out and f"answer: {answer}   reference: {answer}   correct: yes" in out
    assert f"{len(problems)} of {len(problems)} answers match the reference" in out
