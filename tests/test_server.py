"""``sambay serve``: a real server process on a free 127.0.0.1 port, talked to with the official
``openai`` client (chat and completions, streaming or not, n > 1, stop strings, reasoning_content,
usage, every error status), checked against ``reasoning.solve``; a bounded load test with clients
that disconnect mid-stream; the serving benchmark; and the reasoning parser on its own."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

import reasoning
from reasoning.answers import extract_boxed
from reasoning.cli import main
from reasoning.curriculum import make_problem
from reasoning.server import EngineProcess, build_app
from reasoning.server.protocol import ChatCompletionRequest, unsupported_fields
from reasoning.server.reasoning_parser import ReasoningParser, parse_reasoning

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-key"
MODEL = "sambay-builtin"
MAX_QUEUE = 96
QUESTION = "What is 47 * 8?"  # short (one column line): the CPU suite stays quick


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not become healthy in {timeout} s")


def spawn(*args: str, log: Path | None = None) -> tuple[subprocess.Popen, str, int]:
    """``python -m reasoning serve --port <free> *args`` (the built-in model on the CPU), healthy."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = open(log, "w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "reasoning", "serve", "--port", str(port), *args], cwd=ROOT,
                            env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, url, port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The server under test, with an API key and a bound on the queue."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    proc, url, port = spawn("--api-key", KEY, "--max-queue", str(MAX_QUEUE), log=log)
    yield {"url": url, "port": port, "log": log, "proc": proc}
    stop(proc)


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def engine():
    """The same built-in model in this process, for reasoning.solve."""
    return reasoning.load(device="cpu")


def metrics(url: str) -> dict[str, float]:
    """The samples of /metrics by name, summed over their labels."""
    values: dict[str, float] = {}
    for m in re.finditer(r"^([a-z_:]+)(?:\{[^}]*\})? (\S+)$", httpx.get(f"{url}/metrics", timeout=10).text, re.M):
        values[m[1]] = values.get(m[1], 0.0) + float(m[2])
    return values


def split(text: str) -> tuple[str | None, str | None]:
    """deepseek_r1's rule, written out independently: a leading <think> dropped, the text before
    the first </think> is reasoning, after it content; no </think>: all reasoning."""
    if text.startswith("<think>"):
        text = text[len("<think>"):]
    if "</think>" not in text:
        return text or None, None
    reasoning_part, content = text.split("</think>", 1)
    return reasoning_part or None, content or None


def chat_stream(client: openai.OpenAI, **kw) -> tuple[dict[int, dict[str, str]], dict[int, str], object]:
    """Collect a streamed chat completion: per choice the joined reasoning / content, the finish
    reasons, and the usage chunk."""
    parts: dict[int, dict[str, str]] = {}
    finish: dict[int, str] = {}
    usage = None
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.usage is not None:
            assert chunk.choices == []
            usage = chunk.usage
        for c in chunk.choices:
            p = parts.setdefault(c.index, {"reasoning": "", "content": ""})
            p["reasoning"] += getattr(c.delta, "reasoning_content", None) or ""
            p["content"] += c.delta.content or ""
            if c.finish_reason is not None:
                finish[c.index] = c.finish_reason
    return parts, finish, usage


# ---------------------------------------------------------------------------------------------
# The reasoning parser on its own
# ---------------------------------------------------------------------------------------------


def test_parse_reasoning_cases() -> None:
    assert parse_reasoning("<think>\nsteps\n</think>\n\nThe answer is 4.") == ("\nsteps\n", "\n\nThe answer is 4.")
    assert parse_reasoning("steps</think>answer") == ("steps", "answer")  # no leading <think> (vLLM: R1 style)
    assert parse_reasoning("<think>cut off while thinking") == ("cut off while thinking", None)
    assert parse_reasoning("plain text") == ("plain text", None)  # no </think>: all reasoning, as deepseek_r1
    assert parse_reasoning("a</think>b</think>c") == ("a", "b</think>c")  # the first </think> ends the reasoning
    assert parse_reasoning("</think>only answer") == (None, "only answer")
    assert parse_reasoning("x<think>y</think>z") == ("x<think>y", "z")  # only a leading <think> is a tag
    assert parse_reasoning("<think>a</think>b", enabled=False) == (None, "<think>a</think>b")
    assert parse_reasoning("") == (None, None)


def test_streaming_parser_equals_whole_text_at_every_split() -> None:
    """Random texts over an alphabet that makes tags and partial tags common, cut into random
    deltas (single characters included): the deltas concatenate to the whole-text parse, which
    equals the rule written out independently."""
    rng = random.Random(0)
    pieces = ["<think>", "</think>", "<", "</", "</th", "think>", ">", "a", "b", "\n", "<thi", "</think"]
    for trial in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
        want = split(text)
        assert parse_reasoning(text) == want, text
        parser = ReasoningParser()
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6)))) if len(text) > 1 else []
        if trial % 7 == 0:
            cuts = list(range(1, len(text)))  # one character at a time
        got = ["", ""]
        for a, b in zip([0, *cuts], [*cuts, len(text)]):
            r, c = parser.feed(text[a:b])
            got[0] += r
            got[1] += c
        r, c = parser.finish()
        got = [got[0] + r, got[1] + c]
        assert (got[0] or None, got[1] or None) == want, (text, cuts)


def test_parser_off_passes_everything_as_content() -> None:
    parser = ReasoningParser(enabled=False)
    assert parser.feed("<think>a</th") == ("", "<think>a</th")
    assert parser.feed("ink>b") == ("", "ink>b")
    assert parser.finish() == ("", "")


def test_unsupported_fields_are_named() -> None:
    body = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}],
                                                 "tools": [{"type": "function"}], "presence_penalty": 0.5,
                                                 "logprobs": False, "tool_choice": "none"})
    assert unsupported_fields(body) == ["presence_penalty", "tools"]


def test_stream_chunks_from_the_template_are_the_models_json() -> None:
    """The streamed text and finish chunks written from a template are byte for byte what dumping
    the pydantic chunk gives (random texts with quotes, escapes, control and non-ASCII characters;
    several choices, empty parts left out, finish reasons)."""
    from reasoning.server.app import _Chunks, _sse
    from reasoning.server.protocol import ChatCompletionChunk, ChunkChoice, Completion, CompletionChoice, Delta

    rng = random.Random(1)
    alphabet = ['a', ' ', '"', "\\", "\n", "\t", "\x00", "\x1f", "\u2028", "é", "漢", "🙂", "</think>", ""]
    chat = _Chunks(ChatCompletionChunk(id="chatcmpl-1", created=17, model="sambay", choices=[]))
    plain = _Chunks(Completion(id="cmpl-1", created=17, model="sambay", choices=[]))
    for _ in range(300):
        choices = [(rng.randrange(4), "".join(rng.choices(alphabet, k=rng.randrange(3))),
                    "".join(rng.choices(alphabet, k=rng.randrange(3))), rng.choice([None, None, "stop", "length"]))
                   for _ in range(rng.randint(1, 3))]
        assert chat.chat(choices) == _sse(ChatCompletionChunk(id="chatcmpl-1", created=17, model="sambay", choices=[
            ChunkChoice(index=i, delta=Delta(reasoning_content=r or None, content=c or None), finish_reason=f)
            for i, r, c, f in choices]))
        texts = [(i, r + c, f) for i, r, c, f in choices]
        assert plain.completion(texts) == _sse(Completion(id="cmpl-1", created=17, model="sambay", choices=[
            CompletionChoice(index=i, text=t, finish_reason=f) for i, t, f in texts]))


def test_reasoning_tokens_count_the_streamed_text_up_to_think_close() -> None:
    """The usage's reasoning tokens (found by bisection over whole decodes) against a stream
    decoder fed token by token: the tokens up to the one whose text completes </think> (a
    multi-byte character cut across tokens holds text back), else all but a stop token."""
    from types import SimpleNamespace

    from reasoning.server.app import _Server
    from reasoning.small_tokenizer import build_small_tokenizer
    from reasoning.tokenizer import StreamDecoder

    tok = build_small_tokenizer()
    stops = tok.stop_token_ids
    host = SimpleNamespace(reasoning_parser=True, engine=SimpleNamespace(tokenizer=tok, stop_token_ids=stops))

    def brute(tokens: list[int]) -> int:
        decoder, text = StreamDecoder(tok), ""
        for n, t in enumerate(tokens, 1):
            text += decoder.feed(t)
            if "</think>" in text:
                return n
        return len(tokens) - bool(tokens and tokens[-1] in stops)

    rng = random.Random(2)
    pieces = ["</think>", "</th", "ink>", "é", "🙂", "a b", "\n", "<think>", "x"]
    stop_id = sorted(stops)[0]
    for _ in range(300):
        ids = tok.encode("".join(rng.choices(pieces, k=rng.randint(0, 8))))
        if ids and rng.random() < 0.3:  # cut a multi-byte character's bytes across tokens
            ids = ids[:rng.randrange(len(ids))] + ids[rng.randrange(len(ids)):]
        if rng.random() < 0.5:
            ids = ids + [stop_id]
        result = SimpleNamespace(tokens=ids)
        assert _Server.reasoning_tokens(host, result) == brute(ids), ids


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------


def test_logs_url_and_model_and_binds_localhost(server) -> None:
    log = Path(server["log"]).read_text()
    assert f"http://127.0.0.1:{server['port']}" in log and MODEL in log and "SambaYForCausalLM" in log
    assert "Traceback" not in log


def test_health_models_metrics(server, client) -> None:
    assert httpx.get(server["url"] + "/health").json() == {"status": "ok"}
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL] and models[0].owned_by == "sambay"
    m = metrics(server["url"])
    for name in ("sambay_num_requests_running", "sambay_num_requests_waiting", "sambay_kv_blocks_free",
                 "sambay_kv_blocks_total", "sambay_num_preemptions_total", "sambay_generation_tokens_total",
                 "sambay_time_to_first_token_seconds_count", "sambay_time_per_output_token_seconds_count"):
        assert name in m, name


@pytest.mark.parametrize("settings", [{}, {"temperature": 0.9, "top_p": 0.9, "top_k": 20, "seed": 7}],
                         ids=["greedy-defaults", "sampled"])
def test_chat_stream_equals_non_stream_equals_solve(client, engine, settings) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    expected = reasoning.solve(QUESTION, engine, max_new_tokens=300, **settings)
    assert expected.stats.finish_reason == "stop"
    want = split(expected.text)
    openai_settings = {k: v for k, v in settings.items() if k != "top_k"}
    if "top_k" in settings:  # not an OpenAI field: the client sends it as an extra
        openai_settings["extra_body"] = {"top_k": settings["top_k"]}

    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=300, **openai_settings)
    (choice,) = r.choices
    assert (choice.message.reasoning_content, choice.message.content) == want
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and r.model == MODEL

    parts, finish, usage = chat_stream(client, model=MODEL, messages=messages, max_tokens=300,
                                       stream_options={"include_usage": True}, **openai_settings)
    assert (parts[0]["reasoning"] or None, parts[0]["content"] or None) == want
    assert finish == {0: "stop"}
    # usage: the prompt's tokens, every sampled token (the stop token included), the reasoning's
    prompt_tokens = len(engine.tokenizer.encode(engine.prompt_text(QUESTION)))
    for u in (r.usage, usage):
        assert u.prompt_tokens == prompt_tokens == expected.stats.prompt_tokens
        assert u.completion_tokens == expected.stats.generated_tokens == len(expected.tokens)
        assert u.total_tokens == u.prompt_tokens + u.completion_tokens
        reasoning_tokens = u.completion_tokens_details.reasoning_tokens
        if "</think>" in expected.text:  # the tokens up to the one that completes </think>
            assert reasoning_tokens == next(k for k in range(1, len(expected.tokens) + 1)
                                            if "</think>" in engine.tokenizer.decode(expected.tokens[:k]))
        else:
            assert reasoning_tokens == u.completion_tokens - 1  # all of it but the stop token


def test_reasoning_parser_off(tmp_path, engine) -> None:
    """--no-reasoning-parser: the whole text, tags included, in content."""
    proc, url, _ = spawn("--no-reasoning-parser")
    try:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])
        assert r.choices[0].message.content == reasoning.solve(QUESTION, engine).text
        assert getattr(r.choices[0].message, "reasoning_content", None) is None
        assert r.usage.completion_tokens_details.reasoning_tokens == 0
    finally:
        stop(proc)


def test_completions_stream_and_not(client, engine) -> None:
    prompt = engine.prompt_text("What is 12 + 30?")  # the chat prompt as raw text
    expected = reasoning.solve(prompt, engine, chat=False, max_new_tokens=200)
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=200)
    assert r.choices[0].text == expected.text and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == expected.stats.generated_tokens
    assert r.usage.prompt_tokens == expected.stats.prompt_tokens
    text, finish, usage = "", None, None
    for chunk in client.completions.create(model=MODEL, prompt=prompt, max_tokens=200, stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.text
            finish = c.finish_reason or finish
    assert text == expected.text and finish == "stop" and usage.completion_tokens == r.usage.completion_tokens
    # a list of prompts: one choice per prompt, in order
    r = client.completions.create(model=MODEL, prompt=[prompt, engine.prompt_text("What is 5 + 4?")], max_tokens=200)
    assert [c.index for c in r.choices] == [0, 1] and r.choices[0].text == expected.text
    assert extract_boxed(r.choices[1].text) == "9"


def test_length_finish_reason(client, engine) -> None:
    expected = reasoning.solve(QUESTION, engine, max_new_tokens=7)
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                       max_completion_tokens=7)
    assert r.choices[0].finish_reason == "length" == expected.stats.finish_reason
    assert r.usage.completion_tokens == 7
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == split(expected.text)


def test_n_samples_use_consecutive_seeds(client, engine) -> None:
    question = "Write a poem about the sea."  # far from the curriculum: the model is unsure, samples differ
    settings = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 40}
    messages = [{"role": "user", "content": question}]
    r = client.chat.completions.create(model=MODEL, messages=messages, n=3, seed=11, **settings)
    assert [c.index for c in r.choices] == [0, 1, 2]
    expected = engine.run([(question, engine.sampling(temperature=1.0, top_p=0.95, max_new_tokens=40, seed=11 + j))
                           for j in range(3)])  # = solve(..., seed=11 + j), in one batch
    for c, e in zip(r.choices, expected):
        assert (c.message.reasoning_content, c.message.content) == split(e.text)
    assert len({e.text for e in expected}) > 1  # temperature 1: the seeds differ
    assert r.usage.prompt_tokens == expected[0].stats.prompt_tokens  # the prompt is counted once
    assert r.usage.completion_tokens == sum(e.stats.generated_tokens for e in expected)
    parts, finish, _ = chat_stream(client, model=MODEL, messages=messages, n=3, seed=11, **settings)
    assert sorted(parts) == [0, 1, 2] and sorted(finish) == [0, 1, 2]
    for j, e in enumerate(expected):
        assert (parts[j]["reasoning"] or None, parts[j]["content"] or None) == split(e.text)


def test_stop_strings(client, engine) -> None:
    full = reasoning.solve(QUESTION, engine).text
    stop = "carry 5"
    assert stop in full
    expected = reasoning.solve(QUESTION, engine, stop=["never", stop])
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                       stop=["never", stop])
    assert r.choices[0].finish_reason == "stop"
    got = (r.choices[0].message.reasoning_content or "") + (r.choices[0].message.content or "")
    assert stop not in got and full.startswith(expected.text)
    assert (r.choices[0].message.reasoning_content, r.choices[0].message.content) == split(expected.text)
    parts, finish, _ = chat_stream(client, model=MODEL, messages=[{"role": "user", "content": QUESTION}], stop=stop)
    assert (parts[0]["reasoning"] or None, parts[0]["content"] or None) == split(expected.text)
    assert finish == {0: "stop"}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in response.text
    return body["error"]


def post(server, path: str, body, *, key: str | None = KEY, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (bytes, str)):
        return httpx.post(server["url"] + path, content=body, headers=headers, timeout=60, **kw)
    return httpx.post(server["url"] + path, json=body, headers=headers, timeout=60, **kw)


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 4}


def test_400_malformed_body_and_bad_values_are_named(server) -> None:
    assert "not valid JSON" in error_of(post(server, "/v1/chat/completions", b"{not json"), 400)["message"]
    assert "JSON object" in error_of(post(server, "/v1/chat/completions", b"[1, 2]"), 400)["message"]
    e = error_of(post(server, "/v1/chat/completions", {"model": MODEL}), 400)
    assert e["param"] == "messages" and e["type"] == "invalid_request_error"
    for field, value in [("temperature", -1), ("temperature", "hot"), ("top_p", 0), ("top_p", 1.5), ("n", 0),
                         ("max_tokens", 0), ("top_k", -3), ("seed", -1), ("stop", 5)]:
        e = error_of(post(server, "/v1/chat/completions", {**CHAT, field: value}), 400)
        assert e["param"] == field and field in e["message"], (field, e)
    e = error_of(post(server, "/v1/chat/completions", {**CHAT, "messages": [{"role": "robot", "content": "x"}]}), 400)
    assert e["param"].startswith("messages.0.role")
    e = error_of(post(server, "/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}), 400)
    assert e["param"] == "tools" and e["code"] == "unsupported_parameter"
    e = error_of(post(server, "/v1/completions", {"model": MODEL, "prompt": [1, 2, 3]}), 400)
    assert e["param"] == "prompt" and "token-id" in e["message"]
    e = error_of(post(server, "/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}), 400)
    assert e["param"] == "stream_options"


def test_400_prompt_that_cannot_fit_the_context(server, client) -> None:
    e = error_of(post(server, "/v1/completions", {"model": MODEL, "prompt": "7 " * 5000, "max_tokens": 4}), 400)
    assert "context" in e["message"] and "4096" in e["message"], e
    e = error_of(post(server, "/v1/chat/completions", {**CHAT, "max_tokens": 100000}), 400)
    assert "context" in e["message"] and e["code"] == "context_length_exceeded", e
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "7 " * 5000}])


def test_401_without_the_right_key(server) -> None:
    for key in (None, "wrong"):
        e = error_of(post(server, "/v1/chat/completions", CHAT, key=key), 401)
        assert e["code"] == "invalid_api_key"
    assert httpx.get(server["url"] + "/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server["url"] + "/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.get(server["url"] + "/health").status_code == 200  # health and metrics stay open
    assert httpx.get(server["url"] + "/metrics").status_code == 200


def test_404_unknown_model_and_path(server, client) -> None:
    e = error_of(post(server, "/v1/chat/completions", {**CHAT, "model": "gpt-5"}), 404)
    assert "gpt-5" in e["message"] and e["code"] == "model_not_found" and e["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi")
    error_of(httpx.get(server["url"] + "/v1/nothing-here"), 404)


def test_413_body_over_the_limit(server) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    e = error_of(post(server, "/v1/chat/completions", big), 413)
    assert "limit" in e["message"]
    def chunks():  # no Content-Length: counted while reading
        for _ in range(20):
            yield b" " * (1 << 17)
    e = error_of(httpx.post(server["url"] + "/v1/chat/completions", content=chunks(),
                            headers={"Authorization": f"Bearer {KEY}"}), 413)


def test_429_when_the_queue_is_full(server, client) -> None:
    r = post(server, "/v1/chat/completions", {**CHAT, "n": MAX_QUEUE + 1})
    e = error_of(r, 429)
    assert r.headers["Retry-After"] == "1" and "retry" in e["message"] and str(MAX_QUEUE) in e["message"]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=MODEL, messages=CHAT["messages"], n=MAX_QUEUE + 1)
    assert client.chat.completions.create(model=MODEL, messages=CHAT["messages"], max_tokens=3).choices  # still serving


def test_cli_rejects_bad_serve_arguments(capsys) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--max-queue", "0"]) == 2
    assert main(["serve", "--model", "/no/such/folder"]) == 2
    assert "does not exist" in capsys.readouterr().err


class _Uvicorn:
    """The app of an engine process started from this one, on uvicorn in a thread."""

    def __init__(self, engine: EngineProcess) -> None:
        import uvicorn

        self.port = free_port()
        app = build_app(engine, model_name=MODEL)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="critical"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        url = f"http://127.0.0.1:{self.port}"
        wait_healthy(url)
        return url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def failing_engine(flag: str) -> reasoning.ReasoningEngine:
    """The built-in engine, whose steps raise while the file ``flag`` exists (built in the engine
    process: the test switches the fault on and off from its own)."""
    engine = reasoning.load(device="cpu")
    core = engine.engine
    real_step = core.step

    def step(*args, **kwargs):
        if os.path.exists(flag):
            raise RuntimeError("simulated device fault")
        return real_step(*args, **kwargs)

    core.step = step
    return engine


def test_500_for_a_failure_inside_the_engine_which_keeps_serving(tmp_path) -> None:
    flag = tmp_path / "fail"
    with _Uvicorn(EngineProcess(functools.partial(failing_engine, str(flag)))) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "What is 2 + 3?"}]
        flag.touch()
        with pytest.raises(openai.InternalServerError) as info:
            c.chat.completions.create(model=MODEL, messages=messages)
        assert info.value.status_code == 500
        e = info.value.body
        assert "simulated device fault" in e["message"] and "Traceback" not in e["message"]
        with pytest.raises(openai.APIError, match="simulated device fault"):  # streaming: an error event
            for _ in c.chat.completions.create(model=MODEL, messages=messages, stream=True):
                pass
        flag.unlink()
        r = c.chat.completions.create(model=MODEL, messages=messages)
        assert extract_boxed((r.choices[0].message.reasoning_content or "") + (r.choices[0].message.content or "")) == "5"


def test_engine_process_reports_a_failed_start_and_a_death() -> None:
    """The factory's error comes back with its type and message; an engine process that dies
    fails the requests in flight (500) and /health says so."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EngineProcess(functools.partial(reasoning.load, "/no/such/folder"))
    engine = EngineProcess(functools.partial(reasoning.load, device="cpu"))
    with _Uvicorn(engine) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        stream = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}],
                                           stream=True, max_tokens=400)
        next(iter(stream))
        engine._process.kill()
        with pytest.raises(openai.APIError, match="engine process exited"):
            for _ in stream:
                pass
        assert httpx.get(url + "/health", timeout=10).status_code == 503
        with pytest.raises(openai.InternalServerError, match="not running"):
            c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}])


# ---------------------------------------------------------------------------------------------
# Load: many clients at once, some leaving mid-stream
# ---------------------------------------------------------------------------------------------


def test_load_64_clients_with_disconnects(server) -> None:
    rng = random.Random(0)  # two-digit sums: the shortest traces, so a few hundred requests stay quick on a CPU
    problems = [make_problem("add", (rng.randint(10, 99), rng.randint(10, 99)), template=rng.randrange(7))
                for _ in range(192)]
    clients, seen, wrong, dropped = 64, {}, [], []

    async def one(aclient: openai.AsyncOpenAI, i: int) -> None:
        p = problems[i]
        messages = [{"role": "user", "content": p.question}]
        if i % 3 == 0:  # non-streaming
            r = await aclient.chat.completions.create(model=MODEL, messages=messages, user=str(i))
            text = (r.choices[0].message.reasoning_content or "") + (r.choices[0].message.content or "")
            finish = r.choices[0].finish_reason
        else:
            stream = await aclient.chat.completions.create(model=MODEL, messages=messages, stream=True)
            text, finish, chunks = "", None, 0
            async for chunk in stream:
                chunks += 1
                for c in chunk.choices:
                    text += (getattr(c.delta, "reasoning_content", None) or "") + (c.delta.content or "")
                    finish = c.finish_reason or finish
                if i % 8 == 1 and chunks == 4:  # this client leaves mid-stream
                    await stream.close()
                    dropped.append(i)
                    return
        assert i not in seen
        seen[i] = text
        if finish != "stop" or extract_boxed(text) != p.answer:
            wrong.append((i, p.question, p.answer, text[-80:]))

    async def run() -> None:
        aclient = openai.AsyncOpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=300)
        todo = iter(range(len(problems)))

        async def worker() -> None:
            for i in todo:
                await one(aclient, i)

        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(clients))), timeout=600)
        await aclient.close()

    before = metrics(server["url"])
    asyncio.run(run())
    assert not wrong, wrong[:5]
    assert len(dropped) == len([i for i in range(len(problems)) if i % 8 == 1 and i % 3 != 0])
    assert sorted(seen) == sorted(set(range(len(problems))) - set(dropped))  # none lost, none twice
    deadline = time.monotonic() + 30  # the aborted requests are freed at the engine's next steps
    while True:
        m = metrics(server["url"])
        idle = (m["sambay_num_requests_running"] == 0 and m["sambay_num_requests_waiting"] == 0
                and m["sambay_kv_blocks_free"] == m["sambay_kv_blocks_total"] > 0)
        if idle or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert idle, {k: v for k, v in m.items() if k.startswith("sambay_num") or k.startswith("sambay_kv")}
    finished = m["sambay_request_success_total"] - before.get("sambay_request_success_total", 0)
    # the dropped ones were aborted (one may have finished before its abort arrived)
    assert len(seen) <= finished <= len(seen) + len(dropped) // 4
    assert m["sambay_time_to_first_token_seconds_count"] >= len(seen)


# ---------------------------------------------------------------------------------------------
# The serving benchmark
# ---------------------------------------------------------------------------------------------


def test_bench_serve(server, tmp_path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "bench_serve.py"), "--url", server["url"],
                           "--api-key", KEY, "--concurrency", "4", "--requests", "12", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["completed"] == 12 and report["failed"] == 0 and report["model"] == MODEL
    assert report["output_tokens"] > 12 and report["output_tokens_per_s"] > 0 and report["requests_per_s"] > 0
    for key in ("ttft_ms", "itl_ms", "tpot_ms", "e2e_ms"):
        s = report[key]
        assert 0 < s["p50"] <= s["p90"] <= s["p99"], (key, s)
    assert report["ttft_ms"]["p99"] <= report["e2e_ms"]["p99"]


def test_bench_http_measures_the_http_side_alone(tmp_path) -> None:
    """examples/bench_http.py: the app over a stand-in engine, every stream complete, the HTTP
    process's CPU per token measured (a positive, finite figure) and every token counted."""
    out = tmp_path / "http.json"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "bench_http.py"), "--concurrency", "8",
                           "--tokens", "20", "--step", "0.005", "--processes", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed"] == 0 and report["server_tokens"] == 8 * 20
    assert 0 < report["server_cpu_us_per_token"] < 1e5 and report["delivered_tokens_per_s"] > 0


def test_server_log_is_clean(server) -> None:
    """After everything above (errors, disconnects, load): no traceback in the server's log."""
    log = Path(server["log"]).read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
