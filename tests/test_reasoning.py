"""The reasoning loop end to end on tiny random models saved as checkpoint folders (model +
tokenizer): the Python API, the CLI, streaming, stop strings, batching, evaluation, errors."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tokenizers
import torch
from tokenizers import decoders, models, pre_tokenizers, trainers

import reasoning
from reasoning import api
from reasoning.cli import main
from reasoning.engine import ReasoningEngine, Result, Stats, _RowText, read_generation_config
from reasoning.evaluation import read_problems
from reasoning.tokenizer import PHI4_CHAT_TEMPLATE, PHI4_SPECIAL_TOKENS, Tokenizer
from sambay import Phi4MiniConfig, Phi4MiniForCausalLM, SambaYConfig, SambaYForCausalLM
from sambay.generate import SamplingParams

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is 7 * 6?"


def small_tokenizer() -> Tokenizer:
    """A byte-level BPE of 300 tokens with the Phi special tokens (ids 0..11)."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(PHI4_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = ["What is 7 * 6? The answer is \\boxed{42}.", "12 + 34: 2+4=6, 1+3=4 -> 46. So 12 + 34 = 46."] * 10
    tok.train_from_iterator(corpus, trainer)
    return Tokenizer.from_hf(tok, chat_template=PHI4_CHAT_TEMPLATE)


def checkpoint_folder(tmp_path_factory: pytest.TempPathFactory, name: str, cls: type, config) -> Path:
    """The small tokenizer and a ``cls(config)`` with seed-0 random weights, saved in one folder."""
    path = tmp_path_factory.mktemp(name)
    small_tokenizer().save(path)
    torch.manual_seed(0)
    cls(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random SambaY checkpoint folder; its embedding (320) is padded past the tokenizer (300)."""
    return checkpoint_folder(tmp_path_factory, "tiny_sambay", SambaYForCausalLM,
                             SambaYConfig.tiny(vocab_size=320, initializer_range=0.1))


@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random dense Phi-4-mini checkpoint folder (context 256)."""
    return checkpoint_folder(tmp_path_factory, "tiny_dense", Phi4MiniForCausalLM,
                             Phi4MiniConfig.tiny(vocab_size=300, initializer_range=0.1))


@pytest.fixture(scope="module")
def engine(folder: Path) -> ReasoningEngine:
    return reasoning.load(folder, device="cpu")


def sampled(**kw) -> dict:
    return {"temperature": 1.0, "top_p": 0.9, "max_new_tokens": 12, **kw}


# ---------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------


def test_solve_end_to_end(engine: ReasoningEngine) -> None:
    r = reasoning.solve(QUESTION, engine, reference="42", max_new_tokens=10, temperature=0.0)
    assert isinstance(r, Result)
    assert r.prompt == "<|user|>What is 7 * 6?<|end|><|assistant|>"
    assert isinstance(r.text, str) and isinstance(r.reasoning, str)
    assert r.correct is (r.answer is not None and reasoning.answers_match(r.answer, "42"))
    s = r.stats
    assert s.prompt_tokens == len(engine.tokenizer.encode(r.prompt))
    assert s.generated_tokens == len(r.tokens) <= 10
    assert s.prefill_seconds > 0 and s.decode_seconds >= 0 and s.batch_size == 1
    assert s.finish_reason in ("stop", "length")
    if s.finish_reason == "length":
        assert s.generated_tokens == 10 and s.stop is None
    else:
        assert r.tokens[-1] in engine.tokenizer.stop_token_ids and s.stop in ("<|end|>", "<|endoftext|>")
    assert s.decode_tokens_per_second is None or s.decode_tokens_per_second > 0
    assert "tokens/s" in str(s)
    d = r.to_dict()
    assert d["generated_tokens"] == s.generated_tokens and d["temperature"] == 0.0 and d["reference"] == "42"
    json.dumps(d)


def test_deterministic_for_a_seed(engine: ReasoningEngine) -> None:
    a = engine.generate(QUESTION, **sampled(seed=5))
    b = engine.generate(QUESTION, **sampled(seed=5))
    c = engine.generate(QUESTION, **sampled(seed=6))
    assert a.tokens == b.tokens and a.text == b.text
    assert c.tokens != a.tokens  # 12 sampled tokens of a random model: equal only by a fluke


def test_alone_equals_inside_a_batch(engine: ReasoningEngine) -> None:
    prompts = [QUESTION, "Hi", "12 + 34 = ? Show the columns, then box the answer."]
    batch = engine.generate(prompts, **sampled(seed=3))
    assert [r.stats.batch_size for r in batch] == [3, 3, 3]
    assert len({r.stats.prompt_tokens for r in batch}) == 3  # different lengths: left padding is exercised
    for prompt, in_batch in zip(prompts, batch):
        alone = engine.generate(prompt, **sampled(seed=3))
        assert alone.tokens == in_batch.tokens
        assert alone.text == in_batch.text


def _greedy_is_argmax(engine: ReasoningEngine, prompt: str, n: int) -> None:
    r = engine.generate(prompt, temperature=0.0, max_new_tokens=n)
    ids = engine.tokenizer.encode(r.prompt)
    with torch.no_grad():
        logits = engine.model(torch.tensor([ids + r.tokens[:-1]])).logits[0, len(ids) - 1:]
    assert logits.argmax(-1).tolist() == r.tokens


def test_greedy_equals_argmax_of_full_forwards(engine: ReasoningEngine, dense_folder: Path) -> None:
    _greedy_is_argmax(engine, QUESTION, 16)
    # The dense model's LongRoPE picks its factors by capacity (the cache's length, else the input's):
    # a prompt past original_max_position_embeddings (32) makes both paths use the long factors.
    _greedy_is_argmax(reasoning.load(dense_folder, device="cpu"), "What is 7 * 6? " * 6, 16)


def _pick_stop(text: str) -> str | None:
    """A 2-character piece from the middle of ``text`` (no replacement character in it), None if
    there is none."""
    for k in range(len(text) // 3, len(text) - 2):
        piece = text[k:k + 2]
        if "\ufffd" not in piece and text.find(piece) > 0:
            return piece
    return None


def test_stop_strings_cut_the_text(engine: ReasoningEngine) -> None:
    # Greedy first; if its text has no usable piece (a random model may end early), sampled texts
    # of successive seeds: one of them has one, so the test never depends on a lucky draw.
    for settings in [{"temperature": 0.0}] + [{"temperature": 1.0, "top_p": 1.0, "seed": s} for s in range(20)]:
        full = engine.generate(QUESTION, max_new_tokens=24, **settings)
        stop = _pick_stop(full.text)
        if stop is not None:
            break
    assert stop is not None, "no generated text with a usable stop string"
    deltas: list[str] = []
    cut = engine.generate(QUESTION, max_new_tokens=24, stop=["never appears", stop],
                          on_text=lambda i, d: deltas.append(d), **settings)
    assert cut.text == full.text[:full.text.find(stop)]
    assert stop not in cut.text and "".join(deltas) == cut.text
    assert cut.stats.finish_reason == "stop" and cut.stats.stop == stop
    assert cut.tokens == full.tokens[:len(cut.tokens)]  # it stopped at the token completing the stop string


def test_row_text_holds_back_a_possible_stop_string(engine: ReasoningEngine) -> None:
    tok = engine.tokenizer
    text = "So 12 + 34 = 46.\nThe answer is \\boxed{46}. END and more"
    row = _RowText(tok, ["\nThe answer", "END"], tok.stop_token_ids)
    deltas = [row.feed(t) for t in tok.encode(text)]
    deltas.append(row.finish())
    assert row.final == "So 12 + 34 = 46." and "".join(deltas) == row.final
    assert row.stopped_by == "\nThe answer"
    # Without a match, held-back text comes out at the end and nothing is lost.
    row = _RowText(tok, ["ENDX"], tok.stop_token_ids)
    deltas = [row.feed(t) for t in tok.encode("abc END")] + [row.finish()]
    assert "".join(deltas) == "abc END" and row.stopped_by is None


def test_row_text_against_brute_force(engine: ReasoningEngine) -> None:
    """Random texts and stop strings over a small alphabet (many partial matches): the deltas
    always concatenate to the text cut before the first stop string."""
    import random

    rng = random.Random(0)
    for _ in range(200):
        stops = ["".join(rng.choice("ab<>/") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))]
        text = "".join(rng.choice("ab<>/") for _ in range(30))
        row = _RowText(engine.tokenizer, stops, frozenset())
        deltas = [row.feed(t) for t in engine.tokenizer.encode(text)] + [row.finish()]
        cut = min([text.find(s) for s in stops if s in text], default=len(text))
        assert "".join(deltas) == row.final == text[:cut], (stops, text)


def test_streaming_callback_and_iterator(engine: ReasoningEngine) -> None:
    prompts = [QUESTION, "Hi there"]
    seen: dict[int, list[str]] = {0: [], 1: []}
    results = engine.generate(prompts, on_text=lambda i, d: seen[i].append(d), **sampled(seed=1))
    for i, r in enumerate(results):
        assert "".join(seen[i]) == r.text

    stream = reasoning.stream(QUESTION, engine, **sampled(seed=1))
    deltas = list(stream)
    assert all(isinstance(d, str) and d for d in deltas)
    assert "".join(deltas) == stream.result.text == results[0].text

    stream = engine.stream(prompts, **sampled(seed=1))
    pairs = list(stream)
    assert {i for i, _ in pairs} <= {0, 1}
    for i in (0, 1):
        assert "".join(d for j, d in pairs if j == i) == stream.results[i].text == results[i].text


def test_lookahead_gives_the_same_results_and_streams(engine: ReasoningEngine) -> None:
    """An engine that launches each next step before handling the last one's text (the default with
    CUDA graphs) gives the same tokens, texts and stop decisions, and streams the same text."""
    ahead = ReasoningEngine(engine.model, engine.tokenizer, lookahead=True)
    assert ahead.engine.lookahead and not engine.engine.lookahead
    prompts = [QUESTION, "Hi there", "12 + 34 = ?"]
    full = engine.generate(prompts[0], max_new_tokens=24, temperature=0.0)
    stop = _pick_stop(full.text) or "never appears"
    for kw in (sampled(seed=4), {"temperature": 0.0, "max_new_tokens": 24, "stop": [stop]}):
        seen: dict[int, list[str]] = {i: [] for i in range(3)}
        want = engine.generate(prompts, **kw)
        got = ahead.generate(prompts, on_text=lambda i, d: seen[i].append(d), **kw)
        for i, (a, b) in enumerate(zip(got, want)):
            assert (a.tokens, a.text, a.stats.finish_reason, a.stats.stop) == (b.tokens, b.text, b.stats.finish_reason,
                                                                                b.stats.stop)
            assert "".join(seen[i]) == a.text
    assert not ahead.has_unfinished() and ahead.engine.free_blocks == ahead.engine.num_blocks - 1


@pytest.mark.parametrize("stop", [[], ["never appears"]])
def test_a_raising_text_callback_ends_only_its_request(engine: ReasoningEngine, stop: list[str]) -> None:
    """A consumer's on_text that raises ends that request with finish_reason "error" and the
    message (its text made with the stop check or after the step alike); the other one completes."""
    ahead = ReasoningEngine(engine.model, engine.tokenizer, lookahead=True)

    def on_text(i: int, delta: str) -> None:
        if i == 0:
            raise RuntimeError("consumer broke")

    bad, good = ahead.generate([QUESTION, "Hi there"], temperature=0.0, max_new_tokens=8, on_text=on_text, stop=stop)
    alone = engine.generate("Hi there", temperature=0.0, max_new_tokens=8, stop=stop)
    assert bad.stats.finish_reason == "error" and "consumer broke" in bad.stats.error
    assert good.tokens == alone.tokens and good.stats.error is None
    assert not ahead.has_unfinished() and not ahead._live


def test_two_threads_stepping_one_engine_keep_each_text_in_order(engine: ReasoningEngine) -> None:
    """generate() from two threads at once (each steps the shared engine): every request's streamed
    text is its tokens' text, in order, though a slow consumer holds the other thread's steps."""
    import time

    ahead = ReasoningEngine(engine.model, engine.tokenizer, lookahead=True)
    results, seen = {}, {0: [], 1: []}

    def work(who: int) -> None:
        def on_text(_: int, delta: str) -> None:
            seen[who].append(delta)
            time.sleep(0.005)

        results[who] = ahead.generate([QUESTION, "Hi there"][who], temperature=1.0, top_p=0.95, seed=who,
                                      max_new_tokens=16, on_text=on_text)

    threads = [threading.Thread(target=work, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in (0, 1):
        r = results[w]
        tokens = r.tokens[:-1] if r.tokens and r.tokens[-1] in ahead.stop_token_ids else r.tokens
        assert r.text == engine.tokenizer.decode(tokens) == "".join(seen[w])


def test_leaving_a_stream_early_cancels_it(engine: ReasoningEngine) -> None:
    stream = engine.stream(QUESTION, temperature=1.0, top_p=1.0, max_new_tokens=2000, seed=0, stop=["<|end|>"])
    deltas = iter(stream)
    next(deltas)
    deltas.close()  # what leaving a for loop does; it waits for the generating thread
    assert stream.results is not None
    r = stream.result
    assert r.stats.finish_reason in ("abort", "stop") and r.stats.generated_tokens < 2000
    with pytest.raises(RuntimeError, match="only once"):
        iter(stream)
    assert engine.generate(QUESTION, temperature=0.0, max_new_tokens=4).stats.generated_tokens <= 4


def test_generation_config_sets_the_defaults(folder: Path, tmp_path: Path) -> None:
    for f in folder.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"do_sample": False, "temperature": 0.9, "max_new_tokens": 7, "eos_token_id": [5, 0]}))
    config = read_generation_config(tmp_path)
    assert config == {"temperature": 0.0, "max_new_tokens": 7, "stop_token_ids": [5, 0]}
    e = reasoning.load(tmp_path, device="cpu")
    assert e.defaults.temperature == 0.0 and e.defaults.max_new_tokens == 7 and e.defaults.top_p == 0.95
    assert {0, 5} <= e.stop_token_ids
    r = e.generate(QUESTION)
    assert r.params.temperature == 0.0 and r.stats.generated_tokens <= 7
    assert e.generate(QUESTION, max_new_tokens=3).params.max_new_tokens == 3  # a call overrides it


def test_default_model_and_cache(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    monkeypatch.setattr(api, "_loaded", {})
    with pytest.raises(FileNotFoundError, match="built-in default model.*load\\('path/to/checkpoint'\\)"):
        reasoning.load()
    monkeypatch.setattr(api, "DEFAULT_MODEL_DIR", folder)
    r = reasoning.solve(QUESTION, temperature=0.0, max_new_tokens=3)
    assert r.stats.generated_tokens <= 3
    assert api.engine_for(None) is api.engine_for(None)
    assert api.engine_for(str(folder)) is api.engine_for(folder)


def test_chat_messages_and_system_prompt(engine: ReasoningEngine) -> None:
    r = engine.generate([{"role": "user", "content": QUESTION}], system="Be brief.", temperature=0.0,
                        max_new_tokens=2)
    assert r.prompt == "<|system|>Be brief.<|end|><|user|>What is 7 * 6?<|end|><|assistant|>"
    raw = engine.generate("12 + 34 =", chat=False, temperature=0.0, max_new_tokens=2)
    assert raw.prompt == "12 + 34 ="
    assert engine.generate([], max_new_tokens=2) == []


def test_result_splits_reasoning_and_answer() -> None:
    stats = Stats(1, 1, 0.1, 0.1, "stop")
    r = Result("p", "12 + 34: 2+4=6 -> 46.\nThe answer is \\boxed{46}.", [1], stats, SamplingParams(),
               reference="46")
    assert (r.reasoning, r.answer, r.correct) == ("12 + 34: 2+4=6 -> 46.", "46", True)
    r = Result("p", "<think>\nlong \\boxed{1} thoughts\n</think>\nSo \\boxed{\\frac{1}{2}}.", [1], stats,
               SamplingParams(), reference="0.5")
    assert (r.reasoning, r.answer, r.correct) == ("long \\boxed{1} thoughts", "\\frac{1}{2}", True)
    r = Result("p", "no box", [1], stats, SamplingParams())
    assert r.answer is None and r.correct is None
    assert r.with_reference("3").correct is False


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def test_evaluate_uses_seeds_seed_to_seed_plus_k(engine: ReasoningEngine) -> None:
    problems = [{"problem": QUESTION, "answer": "42"}, (" 12 + 34 ", 46)]
    got: list[tuple[int, int]] = []
    ev = reasoning.evaluate(problems, engine, k=2, on_result=lambda s: got.append((s.problem, s.sample)),
                            **sampled(seed=10))
    assert sorted(got) == [(0, 0), (0, 1), (1, 0), (1, 1)] and ev.n == 2 and ev.k == 2
    for i, problem in enumerate([QUESTION, " 12 + 34 "]):
        for j in range(2):
            alone = engine.generate(problem, **sampled(seed=10 + j))
            s = ev.samples[i][j]
            assert (s.text, s.generated_tokens, s.seed) == (alone.text, len(alone.tokens), 10 + j)
            assert s.correct is reasoning.answers_match(alone.answer, problems[i]["answer"] if i == 0 else "46")
    assert ev.samples[1][0].reference == "46"
    assert reasoning.evaluate is reasoning.evaluation.evaluate and not hasattr(api, "evaluate")  # one function


def test_read_problems_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"problem": "1 + 1", "answer": "2"}\n\n{"problem": "oops"\n[1, 2]\n'
                     b'{"problem": "x"}\n{"problem": "", "answer": "1"}\n\xff\xfe\n{"question": "2 + 2", "answer": 4}\n')
    errors: list[tuple[int, str]] = []
    problems = read_problems(path, on_error=lambda n, m: errors.append((n, m)))
    assert [(p.problem, p.answer, p.line) for p in problems] == [("1 + 1", "2", 1), ("2 + 2", "4", 8)]
    assert [n for n, _ in errors] == [3, 4, 5, 6, 7]
    assert "JSON" in errors[0][1] and "object" in errors[1][1] and "'answer'" in errors[2][1]
    assert "UTF-8" in errors[4][1]
    assert len(read_problems(path, limit=1, on_error=lambda n, m: None)) == 1


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def test_cli_ask(folder: Path, engine: ReasoningEngine, capsys: pytest.CaptureFixture) -> None:
    args = ["ask", QUESTION, "--model", str(folder), "--temperature", "1", "--seed", "4", "--max-new-tokens", "8",
            "--device", "cpu", "--reference", "42"]
    assert main(args) == 0
    out = capsys.readouterr().out
    expected = engine.generate(QUESTION, temperature=1.0, seed=4, max_new_tokens=8)
    assert out.startswith(expected.text)
    assert "\nanswer: " in out and "correct: " in out and "stats: prompt " in out and "tokens/s" in out

    assert main(args + ["--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["text"] == expected.text and record["generated_tokens"] == len(expected.tokens)
    assert record["question"] == QUESTION and record["reference"] == "42"


def test_cli_subprocess(folder: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "reasoning", "ask", QUESTION, "--model", str(folder),
                           "--max-new-tokens", "4", "--temperature", "0", "--no-stream"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "answer: " in proc.stdout and "generated " in proc.stdout


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be a positive integer"),
    (["--top-k", "-1"], "--top-k must be an integer >= 0"),
    (["--model", "/no/such/folder"], "does not exist"),
    (["--dtype", "float8"], "unknown dtype"),
    (["--max-batch-size", "0"], "--max-batch-size must be >= 1"),
    (["--num-blocks", "1"], "--num-blocks must be >= 2"),
])
def test_cli_bad_input(folder: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    model = [] if "--model" in flags else ["--model", str(folder)]
    assert main(["ask", QUESTION, *model, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sambay ask: error: ") and message in err


def _copy(folder: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in folder.iterdir():
        shutil.copy(f, dest / f.name)
    return dest


def _break_weights_truncated(path: Path) -> str:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:len(data) // 2])
    return "model.safetensors is not a readable safetensors file"


def _break_weights_integer(path: Path) -> str:
    from safetensors.torch import load_file, save_file

    state = load_file(path / "model.safetensors")
    name = next(k for k in state if k.endswith("norm.weight"))
    state[name] = state[name].to(torch.int64)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return f"tensor {name} is stored as torch.int64"


def _break_config(text: str):
    def edit(path: Path) -> str:
        (path / "config.json").write_text(text)
        return "config.json " + ("must hold a JSON object" if text.startswith("[") else "is not valid JSON")
    return edit


def _break_generation_config(raw: dict):
    def edit(path: Path) -> str:
        (path / "generation_config.json").write_text(json.dumps(raw))
        return f"{path / 'generation_config.json'}: {next(iter(raw))} must be"
    return edit


@pytest.mark.parametrize("breakage", [
    _break_weights_truncated, _break_weights_integer, _break_config('{"model_type": "phi4flash",'),
    _break_config("[]"), _break_generation_config({"temperature": "hot"}), _break_generation_config({"seed": -4}),
    _break_generation_config({"top_p": 2.0}),
], ids=["truncated weights", "integer weights", "config not JSON", "config a list", "generation temperature",
        "generation seed", "generation top_p"])
def test_cli_bad_checkpoint_files_one_line_exit_2(folder: Path, tmp_path: Path, breakage,
                                                  capsys: pytest.CaptureFixture) -> None:
    """Each broken file: the package's own error (a ValueError) naming the file, and from the CLI
    one line on stderr, exit status 2, no traceback."""
    broken = _copy(folder, tmp_path / "broken")
    message = breakage(broken)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        reasoning.load(broken, device="cpu")
    assert type(info.value).__name__ in ("CheckpointError", "ConfigError")
    assert main(["ask", QUESTION, "--model", str(broken), "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sambay ask: error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown device 'bogus'; use cpu, cuda or cuda:N"),
    ("cuda:99", "cuda:99"),
    *([("cuda", "CUDA is not available on this machine")] if not torch.cuda.is_available() else []),
])
def test_cli_bad_device_one_line_exit_2(folder: Path, device: str, message: str,
                                        capsys: pytest.CaptureFixture) -> None:
    assert main(["ask", QUESTION, "--model", str(folder), "--device", device, "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sambay ask: error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("prompt, error, message", [
    (None, TypeError, "a prompt is a question string or a list of chat messages"),
    (123, TypeError, "got int 123"),
    ([{}], ValueError, "chat message 0 needs a string 'role' and 'content'"),
    ([{"role": "user"}], ValueError, "chat message 0 needs a string 'role' and 'content'"),
    ([[1, 2]], TypeError, "a prompt is a question string"),
    ("", ValueError, "the question is empty"),
    ("  \n\t", ValueError, "the question is empty"),
])
def test_what_is_not_a_prompt_is_refused(engine: ReasoningEngine, prompt, error, message) -> None:
    with pytest.raises(error, match=re.escape(message)):
        engine.generate(prompt, max_new_tokens=2)
    if isinstance(prompt, str):
        with pytest.raises(error, match=message):
            reasoning.solve(prompt, engine, max_new_tokens=2)
    with pytest.raises(ValueError, match="the prompt is empty"):  # a raw empty prompt, as before
        engine.generate("", chat=False, max_new_tokens=2)


def test_cli_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["ask"]) == 2
    assert main(["ask", QUESTION, "--top-p", "high"]) == 2
    assert "invalid float value" in capsys.readouterr().err


def test_prompt_longer_than_the_context(engine: ReasoningEngine, dense_folder: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    dense = reasoning.load(dense_folder, device="cpu")  # context 256
    long = "7 * 6 " * 200
    with pytest.raises(ValueError, match="the prompt has .* tokens; the model's context is 256 tokens"):
        dense.generate(long)
    assert main(["ask", long, "--model", str(dense_folder)]) == 2
    assert "context is 256 tokens" in capsys.readouterr().err
    prompt = "7 * 6 " * 80
    room = 256 - len(dense.tokenizer.encode(dense.prompt_text(prompt)))
    assert 0 < room < 50
    with pytest.raises(ValueError, match=f"lower max_new_tokens to at most {room}"):
        dense.generate(prompt, max_new_tokens=50)
    # The default budget (32768) is capped at the room the context leaves.
    r = dense.generate(prompt, temperature=0.0)
    assert r.params.max_new_tokens == room and r.stats.generated_tokens <= room
    with pytest.raises(ValueError, match="temperature must be"):
        engine.generate(QUESTION, temperature=-0.5)
    with pytest.raises(TypeError, match="unknown sampling"):
        engine.sampling(temprature=0.5)


def test_mismatched_tokenizer_is_refused(engine: ReasoningEngine) -> None:
    model = SambaYForCausalLM(SambaYConfig.tiny(vocab_size=1000))
    with pytest.raises(ValueError, match="vocabulary"):
        ReasoningEngine(model, engine.tokenizer)


def test_cli_eval(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"problem": "What is 1 + 2?", "answer": "3"}\n'
                        '{"question": "What is 5 * 5?", "answer": 25}\n'
                        '{"problem": "broken", \n'
                        '{"problem": "What is 9 - 4?", "answer": "5"}\n')
    out = tmp_path / "run"
    assert main(["eval", str(problems), "--model", str(folder), "--k", "2", "--out", str(out),
                 "--max-new-tokens", "5", "--temperature", "1"]) == 0
    captured = capsys.readouterr()
    assert f"{problems}:3: not valid JSON" in captured.err
    assert "pass@1" in captured.out and "pass@2" in captured.out and "maj@2" in captured.out
    assert "bad line(s) skipped: 3" in captured.out and "6 of 6 generations run now" in captured.out
    lines = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [(r["line"], r["sample"]) for r in lines] == [(1, 0), (1, 1), (2, 0), (2, 1), (4, 0), (4, 1)]
    assert [r["seed"] for r in lines] == [0, 1] * 3 and all(r["generated_tokens"] <= 5 for r in lines)
    assert all(r["correct"] in (True, False) and r["finish_reason"] in ("stop", "length") for r in lines)
    assert {p.name for p in out.iterdir()} == {"run.json", "generations.jsonl", "summary.json", "report.png"}

    assert main(["eval", str(tmp_path / "missing.jsonl"), "--model", str(folder), "--out", str(out)]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["eval", str(problems), "--model", str(folder), "--k", "0", "--out", str(out)]) == 2
    assert "--k must be >= 1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Examples and shipped data
# ---------------------------------------------------------------------------------------------


def test_shipped_problem_set_is_the_curriculum_test_split() -> None:
    from reasoning.curriculum import generate_problems

    problems = read_problems(ROOT / "examples" / "data" / "arithmetic_20.jsonl")
    expected = generate_problems(20, seed=1234, split="test")
    assert [(p.problem, p.answer) for p in problems] == [(p.question, p.answer) for p in expected]


@pytest.mark.parametrize("script, args", [
    ("solve_math.py", ["--max-new-tokens", "6"]),
    ("evaluate_problems.py", ["--limit", "2", "--k", "2", "--max-new-tokens", "4"]),
    ("evaluate_problems.py", ["--limit", "2", "--k", "2", "--max-new-tokens", "4", "--out", "{tmp}/run"]),
    ("stream_trace.py", ["--max-new-tokens", "6"]),
])
def test_examples_run(folder: Path, script: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", [script, "--model", str(folder), *(a.format(tmp=tmp_path) for a in args)])
    runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    assert capsys.readouterr().out.strip()


def test_non_finite_logits_end_with_an_error_and_the_cli_exits_non_zero(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A NaN in a weight: generation ends with finish_reason 'error' saying the logits are not
    finite (not '' with 'stop'), and `sambay ask` prints that and exits 1."""
    small_tokenizer().save(tmp_path)
    torch.manual_seed(0)
    model = SambaYForCausalLM(SambaYConfig.tiny(vocab_size=320, initializer_range=0.1))
    with torch.no_grad():
        model.model.layers[2].mlp.fc2.weight[0, 0] = float("nan")
    model.save_pretrained(tmp_path)
    broken = reasoning.load(tmp_path, device="cpu")
    for temperature in (0.0, 1.0):
        r = broken.generate(QUESTION, temperature=temperature, max_new_tokens=6)
        assert r.stats.finish_reason == "error" and "not finite" in r.stats.error and r.tokens == []
    assert main(["ask", QUESTION, "--model", str(tmp_path), "--max-new-tokens", "4", "--no-stream"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sambay ask: error: ") and "logits are not finite" in err


def test_add_step_abort_and_run(engine: ReasoningEngine) -> None:
    """The text-level engine driven by hand: add (streaming through on_text), step, abort from
    another thread; run() returns every result in order and reports each as it finishes."""
    greedy = engine.sampling(temperature=0.0, max_new_tokens=8)
    seen: list[str] = []
    rid = engine.add(QUESTION, greedy, on_text=seen.append)
    other = engine.add("Hi", engine.sampling(temperature=1.0, max_new_tokens=200, seed=1), request_id="other")
    assert other == "other"
    results = {r.request_id: r for r in engine.step()}
    aborter = threading.Thread(target=engine.abort, args=(other,))
    aborter.start()
    aborter.join()
    while engine.has_unfinished():
        results.update({r.request_id: r for r in engine.step()})
    assert results["other"].stats.finish_reason == "abort" and results["other"].stats.generated_tokens < 200
    assert "".join(seen) == results[rid].text
    alone = engine.generate(QUESTION, temperature=0.0, max_new_tokens=8)
    assert results[rid].tokens == alone.tokens
    order: list[int] = []
    both = engine.run([(QUESTION, greedy), ("Hi", engine.sampling(temperature=0.0, max_new_tokens=3))],
                      on_result=lambda i, r: order.append(i))
    assert both[0].tokens == alone.tokens and both[1].stats.generated_tokens <= 3 and sorted(order) == [0, 1]
    with pytest.raises(TypeError, match="a prompt is"):
        engine.add(123)  # type: ignore[arg-type]
