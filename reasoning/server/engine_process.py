"""The engine in a process of its own: HTTP handlers queue requests, that process steps the engine.

A server process that stepped the engine in a thread shared one interpreter lock with the event
loop writing every token to its stream: on the H200 at 256 streams the engine's decode steps ran
at 60% of their speed alone. So, as vLLM's EngineCore does, the engine lives in a child process
(started with ``spawn``; ``factory()`` builds it there) and talks to the server over two pipes:

    server -> engine   ("add", token, [(request id, prompt, params)], chat, stop)
                       ("abort", [request ids])     ("close",)
    engine -> server   ("ready", info)  or  ("failed", exception type, message)   once, at start
                       ("reply", token, None | (exception type, message))         per "add"
                       ("events", [(request id, kind, value)], state)             per engine step

Events are ``"text"`` (a piece of the request's text), ``"done"`` (its Result) and ``"error"``
(it failed inside the engine: the message; the traceback goes to the engine process's stderr).
``state`` is the engine's running / waiting requests, free and usable KV blocks and preemptions
after the step. On the server side a reader thread hands each step's events to the handlers'
:class:`asyncio.Queue`, one ``loop.call_soon_threadsafe`` per step and event loop, as

    (index, "text", delta)    (index, "done", Result)    (index, "error", message)

with ``index`` the request's place in its :meth:`EngineProcess.submit` call. The tokenizer, the
sampling defaults and the context length come back with "ready", so the server validates and
counts without asking the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from sambay.generate import SamplingParams

from ..engine import Prompt, ReasoningEngine, Result, sampling_with
from ..tokenizer import Tokenizer

__all__ = ["EngineError", "EngineInfo", "EngineProcess", "QueueFull"]

ERRORS: dict[str, type[Exception]] = {e.__name__: e for e in (ValueError, TypeError, FileNotFoundError,
                                                               NotADirectoryError, RuntimeError)}


class QueueFull(Exception):
    """The server holds ``max_queue`` requests already."""


class EngineError(RuntimeError):
    """The engine process failed (to start, or later)."""


@dataclass(frozen=True)
class EngineInfo:
    """What the server needs of the engine, sent once the engine process has built it."""

    tokenizer: Tokenizer
    defaults: SamplingParams
    stop_token_ids: frozenset[int]
    max_context: int
    model: str  # class name
    device: str
    dtype: str
    path: str | None


@dataclass
class _Live:
    """One engine request in flight: where its events go, and its timings."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    index: int
    arrived: float = field(default_factory=time.perf_counter)
    first_text: float | None = None


class EngineProcess:
    """Starts the engine process (``factory()`` builds a :class:`~reasoning.engine.ReasoningEngine`
    there; it must be picklable, e.g. a module-level function or a ``functools.partial`` of one) and
    waits until it is ready. Raises the factory's ValueError / FileNotFoundError / ... (same type
    and message) if it fails there, :class:`EngineError` for anything else.

    Args:
        max_queue: most engine requests in flight (running + waiting); more gives :class:`QueueFull`.
        on_finished: called on the reader thread as ``on_finished(result, arrived, first_text)``
            for every request that ran to its end (metrics); settable later.
    """

    def __init__(self, factory: Callable[[], ReasoningEngine], *, max_queue: int = 1024,
                 on_finished: Callable[[Result, float, float | None], None] | None = None) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self.on_finished = on_finished
        ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        self._commands, child_commands = ctx.Pipe(duplex=False)[::-1]
        child_events, self._events = ctx.Pipe(duplex=False)[::-1]
        self._process = ctx.Process(target=_engine_main, args=(factory, child_commands, child_events),
                                    name="sambay-engine", daemon=True)
        self._process.start()
        child_commands.close()
        child_events.close()
        try:
            message = self._events.recv()
        except EOFError:
            message = ("failed", "EngineError", f"the engine process exited with code {self._process.exitcode}")
        if message[0] != "ready":
            self._process.join(timeout=10)
            _, kind, text = message
            raise ERRORS.get(kind, EngineError)(text)
        self.info: EngineInfo = message[1]
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()  # guards _live and _pending (handlers vs the reader thread)
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._tokens = itertools.count()
        self._send_lock = threading.Lock()
        self._state = {"running": 0, "waiting": 0, "free_blocks": 0, "num_blocks": 0, "preemptions": 0,
                       "decode_steps": 0, "decode_rows": 0, "step_seconds": 0.0, "wait_seconds": 0.0}
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="sambay-engine-reader", daemon=True)
        self._reader.start()

    # -- what the server reads ------------------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        return self.info.tokenizer

    @property
    def stop_token_ids(self) -> frozenset[int]:
        return self.info.stop_token_ids

    @property
    def max_context(self) -> int:
        return self.info.max_context

    def sampling(self, **overrides: Any) -> SamplingParams:
        """:meth:`ReasoningEngine.sampling` of the engine's defaults."""
        return sampling_with(self.info.defaults, **overrides)

    @property
    def alive(self) -> bool:
        return self._process.is_alive() and self._reader.is_alive()

    @property
    def in_flight(self) -> int:
        """Engine requests submitted and not finished (running + waiting)."""
        return len(self._live)

    def state(self) -> dict[str, float]:
        """The engine's state after its last step: running and waiting requests, free and usable
        KV blocks, preemptions, and its :class:`~sambay.generate.EngineStats` counters
        (decode steps and rows, seconds inside decode-only steps and of them waiting on the device)."""
        return dict(self._state)

    # -- handlers' side (on an event loop) ------------------------------------------------------

    async def submit(self, prompts: Sequence[tuple[Prompt, SamplingParams]], queue: asyncio.Queue, *, chat: bool,
                     stop: Sequence[str] = ()) -> list[str]:
        """Add one engine request per ``(prompt, params)``; their events go to ``queue`` (request
        ``i`` is index ``i``). Returns their ids once the engine took them.

        Raises:
            QueueFull: the server already holds ``max_queue`` requests.
            ValueError, TypeError: from ``ReasoningEngine.add`` (a prompt that cannot fit the
                context, a bad value); no request of the batch is left running.
            EngineError: the engine process is gone.
        """
        loop = asyncio.get_running_loop()
        token = next(self._tokens)
        ids = [f"{token}-{time.monotonic_ns()}-{i}" for i in range(len(prompts))]
        future = loop.create_future()
        with self._lock:  # room is reserved before the first await: a burst cannot overshoot max_queue
            if len(self._live) + len(ids) > self.max_queue:
                raise QueueFull(f"the server is busy: {len(self._live)} requests in flight, at most "
                                f"{self.max_queue} (--max-queue); retry later")
            self._live.update((rid, _Live(loop, queue, i)) for i, rid in enumerate(ids))
            self._pending[token] = (loop, future)
        try:
            self._send(("add", token, [(rid, p, sp) for rid, (p, sp) in zip(ids, prompts)], chat, list(stop)))
            error = await future
        except BaseException:
            self._drop(ids, token)
            raise
        if error is not None:
            self._drop(ids, token)
            kind, text = error
            raise ERRORS.get(kind, EngineError)(text)
        return ids

    def abort(self, request_ids: Sequence[str]) -> None:
        """Drop requests (a client went away): the engine frees them at its next step. Finished or
        unknown ids are ignored."""
        with self._lock:
            known = [rid for rid in request_ids if self._live.pop(rid, None) is not None]
        if known:
            self._send(("abort", known))

    def close(self) -> None:
        """Stop the engine process (requests in flight are dropped)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._send(("close",))
        except EngineError:
            pass
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)
        self._reader.join(timeout=10)

    def _drop(self, ids: Sequence[str], token: int) -> None:
        with self._lock:
            for rid in ids:
                self._live.pop(rid, None)
            self._pending.pop(token, None)

    def _send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self._commands.send(message)
        except (OSError, ValueError) as e:  # the pipe is closed: the engine process is gone
            raise EngineError(f"the engine process is not running: {e}") from None

    # -- the reader thread ----------------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                message = self._events.recv()
            except (EOFError, OSError):
                break
            if message[0] == "reply":
                _, token, error = message
                with self._lock:
                    waiter = self._pending.pop(token, None)
                if waiter is not None:
                    _resolve(waiter, error)
            else:
                _, events, self._state = message
                self._route(events)
        if not self._closed:  # the engine process died: nothing in flight will finish
            with self._lock:
                victims, self._live = list(self._live.items()), {}
                waiters, self._pending = list(self._pending.values()), {}
            self._route([(rid, "error", "the engine process exited") for rid, _ in victims], dict(victims))
            for waiter in waiters:
                _resolve(waiter, ("EngineError", "the engine process exited"))

    def _route(self, events: list[tuple[str, str, Any]], lives: dict[str, _Live] | None = None) -> None:
        """Hand a step's events to their event loops: one wake-up per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, tuple[int, str, Any]]]] = {}
        now = time.perf_counter()
        for rid, kind, value in events:
            with self._lock:
                live = lives[rid] if lives is not None else (
                    self._live.get(rid) if kind == "text" else self._live.pop(rid, None))
            if live is None:  # aborted meanwhile
                continue
            if kind == "text" and live.first_text is None:
                live.first_text = now
            if kind == "done" and self.on_finished is not None:
                self.on_finished(value, live.arrived, live.first_text)
            by_loop.setdefault(live.loop, []).append((live.queue, (live.index, kind, value)))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # the event loop is closed: the server is shutting down
                pass


def _resolve(waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future], value: Any) -> None:
    loop, future = waiter

    def done() -> None:
        if not future.done():
            future.set_result(value)

    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:
        pass


def _deliver(events: list[tuple[asyncio.Queue, tuple[int, str, Any]]]) -> None:
    """On the event loop: put each event on its request's queue."""
    for queue, event in events:
        queue.put_nowait(event)


# ------------------------------------------------------------------------------------------
# The engine process
# ------------------------------------------------------------------------------------------


def _engine_main(factory: Callable[[], ReasoningEngine], commands: Connection, events: Connection) -> None:
    try:
        engine = factory()
    except BaseException as e:  # noqa: BLE001 - reported to the server, which raises it
        events.send(("failed", type(e).__name__, str(e)))
        return
    model = engine.model
    events.send(("ready", EngineInfo(engine.tokenizer, engine.defaults, engine.stop_token_ids, engine.max_context,
                                     type(model).__name__, str(model.device), str(model.dtype).removeprefix("torch."),
                                     engine.path)))
    _EngineHost(engine, events).run(commands)


class _EngineHost:
    """The engine process's two threads: the main one steps the engine while anything is
    unfinished, another takes commands from the server."""

    def __init__(self, engine: ReasoningEngine, events: Connection) -> None:
        self.engine = engine
        self.events = events
        self.send_lock = threading.Lock()  # both threads send
        self.wake = threading.Event()
        self.closed = False
        self.outbox: list[tuple[str, str, Any]] = []  # this step's events (the stepping thread)
        self.in_flight: set[str] = set()  # guarded by lock
        self.lock = threading.Lock()

    def send(self, message: tuple) -> None:
        with self.send_lock:
            self.events.send(message)

    def run(self, commands: Connection) -> None:
        threading.Thread(target=self.take_commands, args=(commands,), name="sambay-commands", daemon=True).start()
        while not self.closed:
            if not self.engine.has_unfinished():
                self.wake.wait()
                self.wake.clear()
                continue
            try:
                results = self.engine.step()
            except Exception as e:  # noqa: BLE001 - one failure must not stop the server
                traceback.print_exc()
                self.fail_all(f"the engine failed: {type(e).__name__}: {e}")
                time.sleep(0.01)  # a step that keeps failing must not spin
                results = []
            for result in results:
                with self.lock:
                    self.in_flight.discard(result.request_id)
                if result.stats.finish_reason == "error":
                    self.outbox.append((result.request_id, "error", result.stats.error or "generation failed"))
                elif result.stats.finish_reason != "abort":
                    self.outbox.append((result.request_id, "done", result))
            events, self.outbox = self.outbox, []
            try:
                self.send(("events", events, self.state()))
            except (OSError, ValueError):  # the server is gone
                return

    def state(self) -> dict[str, int]:
        core = self.engine.engine
        running = len(core.scheduler.running) + len(core.scheduler.prefilling)
        with self.lock:
            waiting = max(0, len(self.in_flight) - running)
        stats = core.stats
        return {"running": running, "waiting": waiting, "free_blocks": core.free_blocks,
                "num_blocks": core.num_blocks - 1, "preemptions": stats.preemptions,
                "decode_steps": stats.decode_steps, "decode_rows": stats.decode_rows,
                "step_seconds": stats.seconds, "wait_seconds": stats.wait_seconds}

    def take_commands(self, commands: Connection) -> None:
        while True:
            try:
                message = commands.recv()
            except (EOFError, OSError):  # the server is gone
                message = ("close",)
            if message[0] == "add":
                _, token, items, chat, stop = message
                self.send(("reply", token, self.add(items, chat, stop)))
            elif message[0] == "abort":
                for rid in message[1]:
                    self.engine.abort(rid)
                with self.lock:
                    self.in_flight.difference_update(message[1])
            else:  # close
                with self.lock:
                    ids = list(self.in_flight)
                for rid in ids:
                    self.engine.abort(rid)
                self.closed = True
                self.wake.set()
                return
            self.wake.set()

    def add(self, items: list[tuple[str, Prompt, SamplingParams]], chat: bool, stop: list[str]
            ) -> tuple[str, str] | None:
        """Add a request's engine requests, all or none: None, or the error's (type, message)."""
        added: list[str] = []
        try:
            for rid, prompt, params in items:
                self.engine.add(prompt, params, chat=chat, stop=stop, on_text=self.on_text(rid), request_id=rid)
                added.append(rid)
        except Exception as e:  # noqa: BLE001 - the server answers it (400 for a bad prompt)
            for rid in added:
                self.engine.abort(rid)
            return type(e).__name__, str(e)
        with self.lock:
            self.in_flight.update(added)
        return None

    def on_text(self, rid: str) -> Callable[[str], None]:
        def on_text(delta: str) -> None:  # inside engine.step(), on the stepping thread
            self.outbox.append((rid, "text", delta))
        return on_text

    def fail_all(self, message: str) -> None:
        with self.lock:
            victims, self.in_flight = list(self.in_flight), set()
        for rid in victims:
            try:
                self.engine.abort(rid)
            except Exception:  # noqa: BLE001
                traceback.print_exc()
            self.outbox.append((rid, "error", message))
