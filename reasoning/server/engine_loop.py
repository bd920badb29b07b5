"""The engine's own thread: HTTP handlers queue requests, this thread steps the engine.

:class:`EngineLoop` owns a :class:`~reasoning.engine.ReasoningEngine`. Handlers (on the
asyncio event loop) call :meth:`EngineLoop.submit`, which adds engine requests and returns at
once; the stepping thread runs ``engine.step()`` while anything is unfinished and sleeps
otherwise. Text deltas (``on_text``, called inside ``step``) and finished results are handed
to the handler's :class:`asyncio.Queue`, as events, gathered over a step and handed over with
one ``loop.call_soon_threadsafe`` per step (not one per token: each call wakes the event loop):

    (index, "text", delta)        a piece of request ``index``'s text
    (index, "done", Result)       request ``index`` finished (its Result)
    (index, "error", message)     request ``index`` failed inside the engine

A handler whose client went away calls :meth:`abort`: the engine drops the requests at its
next step and frees their memory. An exception out of ``engine.step()`` fails the requests in
flight with an "error" event (the traceback goes to the log, not to clients) and the loop goes
on serving new requests.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sambay.generate import SamplingParams

from ..engine import Prompt, ReasoningEngine, Result

__all__ = ["EngineLoop", "QueueFull"]

log = logging.getLogger("sambay.server")

SWITCH_INTERVAL = 5e-4  # seconds: see EngineLoop.start


class QueueFull(Exception):
    """The server holds ``max_queue`` requests already."""


@dataclass
class _Live:
    """One engine request in flight: where its events go, and its timings."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    index: int
    arrived: float = field(default_factory=time.perf_counter)
    first_text: float | None = None



class EngineLoop:
    """Steps ``engine`` in a background thread and routes its output to asyncio queues.

    Args:
        engine: the text-level engine (its ``add`` / ``step`` / ``abort`` are thread-safe).
        max_queue: most engine requests in the server (running + waiting); more gives
            :class:`QueueFull`.
        on_finished: called from the stepping thread as ``on_finished(result, arrived, first_text)``
            for every request that ran to its end (metrics).
    """

    def __init__(self, engine: ReasoningEngine, *, max_queue: int,
                 on_finished: Callable[[Result, float, float | None], None] | None = None) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.engine = engine
        self.max_queue = max_queue
        self.on_finished = on_finished
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()  # guards _live; never held while the engine runs a step
        self._wake = threading.Event()
        self._outbox: list[tuple[_Live, tuple[int, str, Any]]] = []  # the stepping thread's events of this step
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="sambay-engine", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        # The stepping thread and the event loop share the GIL. Each torch call of a step lets go of
        # it, and getting it back from a busy event loop waits out the switch interval (5 ms by
        # default): at 256 streams that stretched GPU steps of 60 ms by a third. 0.5 ms bounds it.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (requests in flight are aborted)."""
        self._closed = True
        with self._lock:
            ids = list(self._live)
            self._live.clear()
        for rid in ids:
            self.engine.abort(rid)
        self._wake.set()
        self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def in_flight(self) -> int:
        """Engine requests submitted and not finished (running + waiting)."""
        return len(self._live)

    # -- handlers' side ------------------------------------------------------------------------

    def submit(self, prompts: Sequence[tuple[Prompt, SamplingParams]], queue: asyncio.Queue, *, chat: bool,
               stop: Sequence[str] = ()) -> list[str]:
        """Add one engine request per ``(prompt, params)``; their events go to ``queue``
        (request ``i`` is index ``i``). Call on the event loop that reads ``queue``.

        Raises:
            QueueFull: the server already holds ``max_queue`` requests.
            ValueError, TypeError: from ``engine.add`` (a prompt that cannot fit the context,
                a bad value); no request of the batch is left running.
        """
        loop = asyncio.get_running_loop()
        base = uuid.uuid4().hex
        ids = [f"{base}-{i}" for i in range(len(prompts))]
        with self._lock:  # reserve the room first, so a burst cannot overshoot max_queue
            if len(self._live) + len(ids) > self.max_queue:
                raise QueueFull(f"the server is busy: {len(self._live)} requests in flight, at most "
                                f"{self.max_queue} (--max-queue); retry later")
            lives = [_Live(loop, queue, i) for i in range(len(ids))]
            self._live.update(zip(ids, lives))
        added: list[str] = []
        try:
            for rid, live, (prompt, params) in zip(ids, lives, prompts):
                self.engine.add(prompt, params, chat=chat, stop=stop, on_text=self._on_text(live), request_id=rid)
                added.append(rid)
        except BaseException:
            with self._lock:
                for rid in ids:
                    self._live.pop(rid, None)
            for rid in added:
                self.engine.abort(rid)
            raise
        finally:
            self._wake.set()
        return ids

    def abort(self, request_ids: Sequence[str]) -> None:
        """Drop requests (a client went away): the engine frees them at its next step.
        Finished or unknown ids are ignored."""
        for rid in request_ids:
            with self._lock:
                known = self._live.pop(rid, None) is not None
            if known:
                self.engine.abort(rid)
        self._wake.set()

    # -- the stepping thread -------------------------------------------------------------------

    def _on_text(self, live: _Live) -> Callable[[str], None]:
        def on_text(delta: str) -> None:  # inside engine.step(), on the stepping thread: no lock taken here
            if live.first_text is None:
                live.first_text = time.perf_counter()
            self._outbox.append((live, (live.index, "text", delta)))
        return on_text

    def _flush(self) -> None:
        """Hand this step's events to their event loops: one wake-up per loop."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, tuple[int, str, Any]]]] = {}
        for live, event in self._outbox:
            by_loop.setdefault(live.loop, []).append((live.queue, event))
        self._outbox = []
        for loop, events in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, events)
            except RuntimeError:  # the event loop is closed: the server is shutting down
                pass

    def _run(self) -> None:
        while not self._closed:
            if not self.engine.has_unfinished():
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                results = self.engine.step()
            except Exception as e:  # noqa: BLE001 - one failure must not stop the server
                log.exception("engine step failed; failing the requests in flight")
                self._fail_all(f"the engine failed: {type(e).__name__}: {e}")
                self._flush()
                time.sleep(0.01)  # a step that keeps failing must not spin
                continue
            for result in results:
                with self._lock:
                    live = self._live.pop(result.request_id, None)
                if live is None:  # aborted meanwhile
                    continue
                if result.stats.finish_reason == "error":
                    self._outbox.append((live, (live.index, "error", result.stats.error or "generation failed")))
                    continue
                if self.on_finished is not None:
                    self.on_finished(result, live.arrived, live.first_text)
                self._outbox.append((live, (live.index, "done", result)))
            self._flush()

    def _fail_all(self, message: str) -> None:
        with self._lock:
            victims = list(self._live.items())
            self._live.clear()
        for rid, live in victims:
            try:
                self.engine.abort(rid)
            except Exception:  # noqa: BLE001
                log.exception("abort of %s failed", rid)
            self._outbox.append((live, (live.index, "error", message)))


def _deliver(events: list[tuple[asyncio.Queue, tuple[int, str, Any]]]) -> None:
    """On the event loop: put each event on its request's queue."""
    for queue, event in events:
        queue.put_nowait(event)
