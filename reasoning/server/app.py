"""The OpenAI-compatible HTTP API over a :class:`~reasoning.engine.ReasoningEngine` (FastAPI).

    engine = EngineProcess(functools.partial(reasoning.load, device="cpu"))
    app = build_app(engine, model_name="sambay-builtin")
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions`` (both streaming as
server-sent events ending ``data: [DONE]``, or not), ``GET /v1/models``, ``GET /health``,
``GET /metrics``. Handlers only validate, queue engine requests (:class:`EngineProcess`) and
relay what comes back; the engine steps in a process of its own. Every error is an OpenAI error object
``{"error": {"message", "type", "param", "code"}}``:

* 400 a body that is not JSON, a missing or bad field (named in ``param``), a field this server
  cannot honour, a prompt that cannot fit the context (the reason in ``message``);
* 401 a missing or wrong API key (when the server has one); 404 an unknown model or path;
* 413 a body over ``max_body_bytes``; 429 (with ``Retry-After``) when ``max_queue`` requests
  are in flight already; 500 a failure inside the engine, with a message and no traceback.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sambay.generate import SamplingParams

from ..answers import THINK_CLOSE
from ..engine import Prompt, Result
from ..tokenizer.stream import REPLACEMENT_CHAR
from .engine_process import EngineError, EngineProcess, QueueFull
from .metrics import CONTENT_TYPE, Metrics
from .protocol import (
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, ChunkChoice, Completion,
    CompletionChoice, CompletionRequest, CompletionTokensDetails, Delta, ErrorBody, ErrorResponse, ModelCard, ModelList,
    Usage, unsupported_fields,
)
from .reasoning_parser import ReasoningParser, parse_reasoning

__all__ = ["APIError", "build_app", "serve"]

log = logging.getLogger("sambay.server")

R = TypeVar("R", bound=BaseModel)

_DISCONNECTED = object()  # put on a request's queue when its client goes away


class APIError(Exception):
    """An error answered in the OpenAI shape."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.body, self.headers = status, ErrorBody(message=message, type=type, param=param, code=code), headers

    def response(self) -> JSONResponse:
        return JSONResponse(ErrorResponse(error=self.body).model_dump(), status_code=self.status, headers=self.headers)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple) -> str | None:
    """A field's path (``messages.0.role``) from a pydantic error location, without the tags
    pydantic adds for the members of a union (``stop.str``, ``stop.list[str]``)."""
    parts = []
    for x in loc:
        if isinstance(x, str) and (x in _TYPE_TAGS or not x.isidentifier()):
            break
        parts.append(str(x))
    return ".".join(parts) or None


def _validation_message(e: ValidationError) -> tuple[str, str | None]:
    """One line naming every bad field, and the first one's path."""
    parts, first = [], None
    for err in e.errors(include_url=False):
        param = _param(err["loc"])
        first = first or param
        parts.append(f"{param}: {err['msg']}" if param else err["msg"])
    return "; ".join(dict.fromkeys(parts)), first


class _Server:
    """What the handlers share: the engine process, the metrics and the settings."""

    def __init__(self, engine: EngineProcess, *, model_name: str, api_key: str | None, reasoning_parser: bool,
                 max_body_bytes: int) -> None:
        self.engine = engine
        self.model_name = model_name
        self.api_key = api_key
        self.reasoning_parser = reasoning_parser
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())
        self.metrics = Metrics(engine.state)
        engine.on_finished = self._finished

    def _finished(self, result: Result, arrived: float, first_text: float | None) -> None:
        self.metrics.observe(result, arrived, first_text, time.perf_counter())

    # -- request checks ------------------------------------------------------------------------

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise APIError(401, "invalid or missing API key: send it as 'Authorization: Bearer <key>'",
                           type="authentication_error", code="invalid_api_key")

    async def parse(self, request: Request, schema: type[R]) -> R:
        """The body, size-limited, as ``schema``; checks the model name and unsupported fields."""
        self.authorize(request)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise self._too_large(int(length))
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(size)
            chunks.append(chunk)
        try:
            raw = json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}") from None
        if not isinstance(raw, dict):
            raise APIError(400, f"the request body must be a JSON object, got {type(raw).__name__}")
        try:
            body = schema.model_validate(raw)
        except ValidationError as e:
            message, param = _validation_message(e)
            raise APIError(400, message, param=param) from None
        if body.model is not None and body.model != self.model_name:
            raise APIError(404, f"the model '{body.model}' does not exist; this server serves '{self.model_name}'",
                           param="model", code="model_not_found")
        bad = unsupported_fields(body)
        if bad:
            raise APIError(400, f"not supported by this server: {', '.join(bad)}", param=bad[0],
                           code="unsupported_parameter")
        if body.stream_options is not None and not body.stream:
            raise APIError(400, "stream_options needs stream: true", param="stream_options")
        return body

    def _too_large(self, size: int) -> APIError:
        return APIError(413, f"the request body has {size} bytes, more than the limit of {self.max_body_bytes}",
                        code="request_too_large")

    def sampling(self, body: ChatCompletionRequest | CompletionRequest) -> list[SamplingParams]:
        """One SamplingParams per choice: seeds seed .. seed + n - 1. Without a ``seed`` a request
        draws its own (as the OpenAI API samples afresh each time), so two unseeded requests for
        one prompt do not return the same sample."""
        seed = body.seed if body.seed is not None else secrets.randbelow(2**62)
        try:
            params = self.engine.sampling(temperature=body.temperature, top_p=body.top_p, top_k=body.top_k,
                                          max_new_tokens=body.new_tokens(), seed=seed)
        except ValueError as e:
            raise APIError(400, str(e)) from None
        return [replace(params, seed=params.seed + j) for j in range(body.n)]

    async def submit(self, prompts: Sequence[tuple[Prompt, SamplingParams]], queue: asyncio.Queue, *, chat: bool,
                     stop: Sequence[str], param: str) -> list[str]:
        try:
            return await self.engine.submit(prompts, queue, chat=chat, stop=stop)
        except EngineError as e:
            raise APIError(500, f"the engine is not running: {e}", type="server_error", code="engine_error") from None
        except QueueFull as e:
            raise APIError(429, str(e), type="rate_limit_error", code="rate_limit_exceeded",
                           headers={"Retry-After": "1"}) from None
        except ValueError as e:
            code = "context_length_exceeded" if "context" in str(e) else None
            raise APIError(400, str(e), param=param, code=code) from None
        except TypeError as e:
            raise APIError(400, str(e), param=param) from None

    # -- results -------------------------------------------------------------------------------

    def reasoning_tokens(self, result: Result) -> int:
        """Generated tokens whose text is reasoning: those up to the one that completes
        ``</think>`` in the streamed text; without ``</think>``, all but the stop token (all text
        is reasoning). The streamed text after n tokens is the decode of the first j <= n tokens for
        the last j whose decode does not end in an unfinished character (what a
        :class:`~reasoning.tokenizer.StreamDecoder` hands out), so the answer is the first prefix
        that holds ``</think>`` and ends cleanly: found by bisection, a few whole decodes rather
        than one per token."""
        if not self.reasoning_parser:
            return 0
        tokens, tok = result.tokens, self.engine.tokenizer
        stopped = bool(tokens) and tokens[-1] in self.engine.stop_token_ids
        fallback = len(tokens) - stopped
        if THINK_CLOSE not in tok.decode(tokens):
            return fallback
        lo, hi = 1, len(tokens)  # the first prefix holding </think> (holding it is monotone in n)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if THINK_CLOSE in tok.decode(tokens[:mid]) else (mid + 1, hi)
        for n in range(lo, len(tokens) + 1):
            if not tok.decode(tokens[:n]).endswith(REPLACEMENT_CHAR):
                return n
        return fallback

    def usage(self, prompt_tokens: int, results: Sequence[Result]) -> Usage:
        completion = sum(r.stats.generated_tokens for r in results)
        reasoning = sum(self.reasoning_tokens(r) for r in results)
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion,
                     completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning))


class _Run:
    """The engine requests of one HTTP request: their events, read until all are done."""

    def __init__(self, server: _Server, queue: asyncio.Queue, ids: list[str], request: Request) -> None:
        self.server = server
        self.queue = queue
        self.ids = ids
        self.pending = set(range(len(self.ids)))
        self.disconnected = False
        self.watcher = asyncio.ensure_future(self._watch(request))

    @classmethod
    async def start(cls, server: _Server, request: Request, prompts: Sequence[tuple[Prompt, SamplingParams]], *,
                    chat: bool, stop: Sequence[str], param: str) -> _Run:
        """Submit the engine requests of one HTTP request."""
        queue: asyncio.Queue = asyncio.Queue()
        ids = await server.submit(prompts, queue, chat=chat, stop=stop, param=param)
        return cls(server, queue, ids, request)

    async def _watch(self, request: Request) -> None:
        """When the client goes away (the body is read already), abort its requests at once,
        whether or not anything is reading the queue, and wake the reader."""
        while (await request.receive())["type"] != "http.disconnect":
            pass
        self.disconnected = True
        self.server.engine.abort(self.ids)
        self.queue.put_nowait(_DISCONNECTED)

    async def events(self) -> AsyncIterator[list[tuple[int, str, Any]]]:
        """Batches of events (everything queued at once, in order) until every request is
        done; stops early (aborting what is left) if the client disconnects. A failure
        inside the engine raises :class:`APIError` 500."""
        try:
            while self.pending:
                batch = [await self.queue.get()]
                while not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                if _DISCONNECTED in batch:
                    log.info("client disconnected; aborting %d request(s)", len(self.pending))
                    return
                for index, kind, value in batch:
                    if kind == "error":
                        raise APIError(500, f"generation failed inside the engine: {value}", type="server_error",
                                       code="engine_error")
                    if kind == "done":
                        self.pending.discard(index)
                yield batch
        finally:
            self.close()

    def close(self) -> None:
        self.watcher.cancel()
        self.server.engine.abort([self.ids[i] for i in sorted(self.pending)])
        self.pending.clear()


def _sse(payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json(exclude_none=True) if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


class _Chunks:
    """The text and finish chunks of one stream (one a step per request: thousands a second at high
    concurrency, more than building and dumping a pydantic model each leaves room for), written
    from the stream's own chunk with its choices cut out: the same JSON :func:`_sse` writes for
    those choices (``tests/test_server.py`` compares them)."""

    def __init__(self, empty: ChatCompletionChunk | Completion) -> None:
        head, sep, tail = _sse(empty).partition('"choices":[]')
        assert sep, "the chunk's JSON has its choices"
        self.head, self.tail = head + '"choices":[', "]" + tail

    def chat(self, choices: list[tuple[int, str, str, str | None]]) -> str:
        """``(index, reasoning_content, content, finish_reason)`` per choice, as ``ChunkChoice(index,
        Delta(reasoning_content=r or None, content=c or None), finish_reason)`` dumps (None left out)."""
        parts = []
        for i, reasoning, content, finish in choices:
            fields = ([f'"content":{_json_str(content)}'] if content else []) + \
                ([f'"reasoning_content":{_json_str(reasoning)}'] if reasoning else [])
            parts.append(f'{{"index":{i},"delta":{{{",".join(fields)}}}{_finish(finish)}}}')
        return self.head + ",".join(parts) + self.tail

    def completion(self, choices: list[tuple[int, str, str | None]]) -> str:
        """``(index, text, finish_reason)`` per choice, as ``CompletionChoice`` dumps."""
        return self.head + ",".join(f'{{"index":{i},"text":{_json_str(t)}{_finish(f)}}}' for i, t, f in choices) \
            + self.tail


def _finish(reason: str | None) -> str:
    return f',"finish_reason":{_json_str(reason)}' if reason is not None else ""


def _json_str(text: str) -> str:
    """``json.dumps(text, ensure_ascii=False)``; most deltas need no escape at all (printable, no quote
    or backslash), which is a concatenation."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    return json.dumps(text, ensure_ascii=False)


def build_app(engine: EngineProcess, *, model_name: str, api_key: str | None = None, reasoning_parser: bool = True,
              max_body_bytes: int = 1 << 20) -> FastAPI:
    """The FastAPI application serving ``engine`` (a started :class:`EngineProcess`, whose
    ``max_queue`` bounds the requests in flight: beyond, 429 with ``Retry-After``) as ``model_name``.
    The app closes the engine process when it shuts down.

    Args:
        api_key: when set, ``/v1/*`` needs ``Authorization: Bearer <api_key>``.
        reasoning_parser: split chat answers at ``</think>`` into ``reasoning_content`` and
            ``content`` (vLLM's ``deepseek_r1`` parser); False leaves all in ``content``.
        max_body_bytes: larger request bodies get 413.
    """
    server = _Server(engine, model_name=model_name, api_key=api_key, reasoning_parser=reasoning_parser,
                     max_body_bytes=max_body_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()

    app = FastAPI(title="sambay", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if e.status_code == 404 else None
        message = f"no such endpoint: {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
        return APIError(e.status_code, message, code=code).response()

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, e: Exception) -> JSONResponse:
        log.error("internal error", exc_info=e)
        return APIError(500, f"internal server error: {type(e).__name__}: {e}", type="server_error").response()

    @app.get("/health")
    async def health() -> Response:
        if not engine.alive:
            return APIError(503, "the engine process is not running", type="server_error").response()
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request) -> JSONResponse:
        server.authorize(request)
        card = ModelCard(id=model_name, created=server.created, max_model_len=engine.max_context)
        return JSONResponse(ModelList(data=[card]).model_dump())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await server.parse(request, ChatCompletionRequest)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        params = server.sampling(body)
        run = await _Run.start(server, request, [(messages, p) for p in params], chat=True,
                               stop=body.stop_strings(), param="messages")
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_chat_stream(server, run, rid, include_usage), media_type="text/event-stream")
        results: dict[int, Result] = {}
        async with aclosing(run.events()) as events:
            async for batch in events:
                results.update((i, v) for i, kind, v in batch if kind == "done")
        if run.disconnected:  # nobody reads an answer
            return Response(status_code=499)
        choices = []
        for i in range(len(params)):
            reasoning, content = parse_reasoning(results[i].text, server.reasoning_parser)
            choices.append(ChatChoice(index=i, message=ChatMessage(content=content, reasoning_content=reasoning),
                                      finish_reason=results[i].stats.finish_reason))
        usage = server.usage(results[0].stats.prompt_tokens, list(results.values()))
        return JSONResponse(ChatCompletion(id=rid, model=model_name, choices=choices, usage=usage).model_dump())

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await server.parse(request, CompletionRequest)
        if isinstance(body.prompt, str):
            prompts = [body.prompt]
        elif body.prompt and all(isinstance(p, str) for p in body.prompt):
            prompts = list(body.prompt)
        else:
            raise APIError(400, "prompt must be a string or a list of strings (token-id prompts are not supported)",
                           param="prompt")
        params = server.sampling(body)
        run = await _Run.start(server, request, [(p, sp) for p in prompts for sp in params], chat=False,
                               stop=body.stop_strings(), param="prompt")
        rid = f"cmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_completion_stream(server, run, rid, created, body.n, include_usage),
                                     media_type="text/event-stream")
        results: dict[int, Result] = {}
        async with aclosing(run.events()) as events:
            async for batch in events:
                results.update((i, v) for i, kind, v in batch if kind == "done")
        if run.disconnected:
            return Response(status_code=499)
        ordered = [results[i] for i in range(len(results))]
        choices = [CompletionChoice(index=i, text=r.text, finish_reason=r.stats.finish_reason)
                   for i, r in enumerate(ordered)]
        prompt_tokens = sum(ordered[i * body.n].stats.prompt_tokens for i in range(len(prompts)))
        usage = server.usage(prompt_tokens, ordered)
        return JSONResponse(Completion(id=rid, model=model_name, created=created, choices=choices,
                                       usage=usage).model_dump())

    return app


def _error_event(e: APIError) -> str:
    return _sse(ErrorResponse(error=e.body).model_dump()) + "data: [DONE]\n\n"


async def _chat_stream(server: _Server, run: _Run, rid: str, include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of a chat completion: a role chunk per choice, then the deltas
    (``reasoning_content`` / ``content``), a finish chunk per choice, the usage (when asked
    for) and ``[DONE]``."""
    created, model = int(time.time()), server.model_name
    n = len(run.ids)
    parsers = [ReasoningParser(server.reasoning_parser) for _ in range(n)]
    results: dict[int, Result] = {}

    chunks = _Chunks(ChatCompletionChunk(id=rid, created=created, model=model, choices=[]))
    yield _sse(ChatCompletionChunk(id=rid, created=created, model=model, choices=[
        ChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(n)]))
    try:
        async with aclosing(run.events()) as events:  # closing the stream aborts what is left
            async for batch in events:
                choices: list[tuple[int, str, str, str | None]] = []
                for i, kind, value in batch:
                    if kind == "text":
                        reasoning, content = parsers[i].feed(value)
                    else:
                        results[i] = value
                        reasoning, content = parsers[i].finish()
                    if reasoning or content:
                        choices.append((i, reasoning, content, None))
                    if kind == "done":
                        choices.append((i, "", "", value.stats.finish_reason))
                if choices:
                    yield chunks.chat(choices)
    except APIError as e:
        yield _error_event(e)
        return
    if len(results) < n:  # the client went away
        return
    if include_usage:
        usage = server.usage(results[0].stats.prompt_tokens, list(results.values()))
        yield _sse(ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=usage))
    yield "data: [DONE]\n\n"


async def _completion_stream(server: _Server, run: _Run, rid: str, created: int, n: int,
                             include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events of a completion: text chunks, a finish chunk per choice, the usage
    (when asked for) and ``[DONE]``."""
    model = server.model_name
    results: dict[int, Result] = {}
    chunks = _Chunks(Completion(id=rid, created=created, model=model, choices=[]))
    try:
        async with aclosing(run.events()) as events:
            async for batch in events:
                choices: list[tuple[int, str, str | None]] = []
                for i, kind, value in batch:
                    if kind == "text":
                        choices.append((i, value, None))
                    else:
                        results[i] = value
                        choices.append((i, "", value.stats.finish_reason))
                yield chunks.completion(choices)
    except APIError as e:
        yield _error_event(e)
        return
    if len(results) < len(run.ids):
        return
    if include_usage:
        ordered = [results[i] for i in range(len(results))]
        prompt_tokens = sum(ordered[i].stats.prompt_tokens for i in range(0, len(ordered), n))
        yield _sse(Completion(id=rid, created=created, model=model, choices=[],
                              usage=server.usage(prompt_tokens, ordered)))
    yield "data: [DONE]\n\n"


def serve(app: FastAPI, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          access_log: bool = False) -> None:
    """Run ``app`` on uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=5)
