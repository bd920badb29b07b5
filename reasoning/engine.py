"""The text-level reasoning loop: prompts in, reasoning traces and checked answers out.

:class:`ReasoningEngine` holds a model of the package (SambaY or dense), its tokenizer and a
token-level :class:`sambay.generate.Engine`. It turns questions (or chat messages) into chat
prompts, runs them through the continuous-batching engine, stops each on ``<|end|>`` / eos / stop strings /
``max_new_tokens``, streams the text as it is produced and returns one :class:`Result` per
prompt (text, reasoning, boxed answer, statistics)::

    engine = ReasoningEngine.from_pretrained("path/to/checkpoint")
    result = engine.generate("What is 347 * 28?", temperature=0.0)
    print(result.text, result.answer, result.stats)

    for delta in engine.stream("What is 347 * 28?"):     # the iterator form
        print(delta, end="", flush=True)

Sampling defaults, in order of precedence: the keyword arguments of a call, the checkpoint's
``generation_config.json`` (see :func:`read_generation_config`), then the reasoning defaults
of :class:`sambay.generate.SamplingParams` (temperature 0.6, top-p 0.95, 32768 new tokens).
"""

from __future__ import annotations

import itertools
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from sambay.config import ConfigError, read_config_json
from sambay.engine.sequence import decode_tokens_per_second
from sambay.generate import Engine, Generation, Request, SamplingParams

from .answers import answers_match, extract_boxed, split_reasoning
from .tokenizer import StreamDecoder, Tokenizer, load_tokenizer

__all__ = ["DEFAULT_MODEL_DIR", "Prompt", "ReasoningEngine", "Result", "Stats", "TextStream", "parse_dtype",
           "read_generation_config", "sampling_with"]

#: Where the built-in default model lives inside the installed package.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

#: A question (str, wrapped in the chat template) or a whole conversation of chat messages.
Prompt = Union[str, Sequence[Mapping[str, str]]]

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "seed")

WHAT_A_PROMPT_IS = 'a prompt is a question string or a list of chat messages {"role": ..., "content": ...}'


def check_prompt(prompt: Any, *, chat: bool = True) -> None:
    """Raise TypeError for something that is not a prompt (:data:`WHAT_A_PROMPT_IS`), ValueError
    for an empty question (only whitespace) or a chat message without a string role and content.
    An empty raw prompt (``chat=False``) is refused once encoded, with the batch's wording."""
    if isinstance(prompt, str):
        if chat and not prompt.strip():
            raise ValueError(f"the question is empty; {WHAT_A_PROMPT_IS}")
        return
    if not isinstance(prompt, Sequence) or isinstance(prompt, (bytes, bytearray)):
        raise TypeError(f"{WHAT_A_PROMPT_IS}; got {type(prompt).__name__} {prompt!r:.80}")
    if not prompt:
        raise ValueError(f"the list of chat messages is empty; {WHAT_A_PROMPT_IS}")
    for i, m in enumerate(prompt):
        if not isinstance(m, Mapping):
            raise TypeError(f"chat message {i} is a {type(m).__name__}, not a mapping; {WHAT_A_PROMPT_IS}")
        if not (isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise ValueError(f"chat message {i} needs a string 'role' and 'content', got {dict(m)!r:.80}; "
                             f"{WHAT_A_PROMPT_IS}")

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def sampling_with(defaults: SamplingParams, **overrides: Any) -> SamplingParams:
    """``overrides`` (None values ignored) over ``defaults``. Raises ValueError for a bad value,
    TypeError for an unknown name."""
    unknown = set(overrides) - set(SAMPLING_KEYS)
    if unknown:
        raise TypeError(f"unknown sampling setting(s) {sorted(unknown)}; expected {list(SAMPLING_KEYS)}")
    return replace(defaults, **{k: v for k, v in overrides.items() if v is not None})


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``"bfloat16"`` / ``"bf16"`` / ``torch.bfloat16`` -> ``torch.bfloat16`` (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return _DTYPES[key]


def read_generation_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The sampling defaults a checkpoint folder carries in ``generation_config.json``.

    Read as transformers writes it, but as overrides of the reasoning defaults: ``temperature``,
    ``top_p``, ``top_k``, ``max_new_tokens`` and ``seed`` are taken when present;
    ``do_sample: false`` means greedy (temperature 0); ``eos_token_id`` (an int or a list) adds
    stop tokens (key ``stop_token_ids``). A missing file gives ``{}``. A folder whose model is
    best decoded greedily (like the tiny built-in one) says ``{"do_sample": false}`` there.
    """
    path = Path(folder) / "generation_config.json"
    if not path.is_file():
        return {}
    raw = read_config_json(path)
    config = {key: raw[key] for key in SAMPLING_KEYS if raw.get(key) is not None}
    if raw.get("do_sample") is False:
        config["temperature"] = 0.0
    eos = raw.get("eos_token_id")
    if eos is not None:
        ids = [eos] if isinstance(eos, int) else eos
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
            raise ConfigError(f"{path}: eos_token_id must be a token id or a list of them, got {eos!r}")
        config["stop_token_ids"] = list(ids)
    try:
        SamplingParams(**{k: v for k, v in config.items() if k in SAMPLING_KEYS})  # validate early
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------


@dataclass
class Stats:
    """What one request cost. ``prefill_seconds`` runs from its admission to its first token,
    ``decode_seconds`` from its first token to its last (other requests share the device
    meanwhile); ``batch_size`` is the largest running batch it decoded in."""

    prompt_tokens: int
    generated_tokens: int  # every sampled token, the stop token included
    prefill_seconds: float
    decode_seconds: float
    finish_reason: str  # "stop" (stop token or string), "length" (max_new_tokens), "abort", "error"
    stop: str | None = None  # what stopped it: the stop token's text (e.g. "<|end|>") or the stop string
    batch_size: int = 1
    error: str | None = None  # with finish_reason "error": what went wrong (e.g. non-finite logits)

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Tokens after the first (which comes from the prefill) per decode second; None for a
        single token (:func:`sambay.engine.sequence.decode_tokens_per_second`, the one definition)."""
        return decode_tokens_per_second(self.generated_tokens, self.decode_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decode_tokens_per_second": self.decode_tokens_per_second}

    def __str__(self) -> str:
        stop = f", {self.finish_reason}" + (f" on {self.stop!r}" if self.stop else "")
        rate = self.decode_tokens_per_second
        return (f"prompt {self.prompt_tokens} tokens | generated {self.generated_tokens} tokens{stop} | "
                f"prefill {self.prefill_seconds:.3f} s | decode {self.decode_seconds:.2f} s, "
                f"{'-' if rate is None else f'{rate:.1f}'} tokens/s")


@dataclass
class Result:
    """One generation, its answer and its statistics.

    ``text`` is the generated text without the stop token or stop string that ended it.
    ``reasoning`` is the text before the final answer (:func:`reasoning.answers.split_reasoning`;
    when that finds no break, the lines before the line with the last ``\\boxed{}``), ``answer``
    the last ``\\boxed{...}`` of the final-answer part (else of the whole text; None without one),
    ``correct`` whether it matches ``reference`` (None without a reference).
    """

    prompt: str  # the prompt text the model continued (chat template applied)
    text: str
    tokens: list[int]  # generated token ids, the stop token included
    stats: Stats
    params: SamplingParams
    reference: str | None = None
    request_id: str | None = None
    reasoning: str = field(init=False)
    answer: str | None = field(init=False)
    correct: bool | None = field(init=False)

    def __post_init__(self) -> None:
        self.reasoning, final = split_reasoning(self.text)
        if not self.reasoning and "\n" in final:  # one paragraph: the answer is its last boxed line
            lines = final.split("\n")
            boxed = [i for i, line in enumerate(lines) if extract_boxed(line) is not None]
            if boxed and boxed[-1] > 0:
                self.reasoning = "\n".join(lines[:boxed[-1]]).strip()
        self.answer = extract_boxed(final)
        if self.answer is None:
            self.answer = extract_boxed(self.text)
        self.correct = None if self.reference is None else answers_match(self.answer, self.reference)

    def with_reference(self, reference: str | None) -> Result:
        """A copy checked against ``reference``."""
        return replace(self, reference=None if reference is None else str(reference))

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "reasoning": self.reasoning, "answer": self.answer,
                "reference": self.reference, "correct": self.correct, **asdict(self.params),
                **self.stats.to_dict()}


# ------------------------------------------------------------------------------------------
# Text of one row: streaming deltas and stop strings
# ------------------------------------------------------------------------------------------


class _RowText:
    """Detokenizes one row's tokens and watches for stop strings.

    Text is handed out only once no stop string can start inside it: a suffix that is the
    beginning of a stop string is held back until it is decided. So the deltas concatenate to
    the final text, and the final text ends before the first stop string. Only the text not yet
    handed out is kept as one string (a match can only start there), so a token costs the same
    at the end of a 32K-token trace as at its start.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], stop_ids: frozenset[int]) -> None:
        self.decoder = StreamDecoder(tokenizer)
        self.stop = tuple(stop)
        self.longest = max(map(len, self.stop), default=0)
        self.firsts = {s[0] for s in self.stop}
        self.stop_ids = stop_ids
        self.sent: list[str] = []  # the deltas handed out
        self.pending = ""  # decoded, not handed out yet
        self.stopped_by: str | None = None
        self.done = False

    def feed(self, token: int) -> str:
        """Add a generated token; return the text that can be handed out now."""
        if self.done or self.stopped_by is not None or token in self.stop_ids:
            return ""
        self.pending += self.decoder.feed(token)
        return self._decide()

    def _decide(self) -> str:
        """Hand out what is decided: up to the first stop string, else all but a possible start of one."""
        hits = [(i, s) for s in self.stop if (i := self.pending.find(s)) != -1]
        if hits:
            cut, self.stopped_by = min(hits)
            delta = self._send(cut)
            self.pending = ""
            return delta
        return self._send(len(self.pending) - self._held())

    def _held(self) -> int:
        """Length of the longest suffix of the pending text that begins a stop string."""
        tail = self.pending[max(0, len(self.pending) - self.longest + 1):]
        i = 0
        while True:  # candidates start with a stop string's first character (found by str.find: fast)
            starts = [j for c in self.firsts if (j := tail.find(c, i)) != -1]
            if not starts:
                return 0
            i = min(starts)
            if any(s.startswith(tail[i:]) for s in self.stop):
                return len(tail) - i
            i += 1

    def finish(self) -> str:
        """The row is over: return the rest of its text."""
        if self.done:
            return ""
        self.done = True
        if self.stopped_by is not None:
            return ""
        self.pending += self.decoder.flush()  # a stop string can still complete in the flushed tail
        delta = self._decide()
        return delta + self._send(len(self.pending))

    @property
    def final(self) -> str:
        return "".join(self.sent) + self.pending

    def _send(self, end: int) -> str:
        delta, self.pending = self.pending[:end], self.pending[end:]
        if delta:
            self.sent.append(delta)
        return delta


@dataclass
class _Item:
    """One prepared request: its prompt text, ids and sampling settings."""

    prompt: str
    ids: list[int]
    params: SamplingParams


@dataclass
class _Live:
    """A request in flight: its text, its callbacks, and its result once it finished."""

    item: _Item
    row: _RowText
    on_text: Callable[[str], None] | None
    generated: int = 0
    batch: int = 1
    result: Result | None = None
    error: str | None = None  # the text callback raised: the request ends with this error

    def feed(self, token: int) -> None:
        """A generated token: its text, streamed when decided."""
        self.generated += 1
        self.emit(self.row.feed(token))

    def emit(self, delta: str) -> None:
        """Hand ``delta`` to the callback; one that raises ends its own request, not the others."""
        if delta and self.on_text is not None and self.error is None:
            try:
                self.on_text(delta)
            except Exception as e:  # noqa: BLE001
                self.error = f"the text callback raised {type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------
# The engine
# ------------------------------------------------------------------------------------------


class ReasoningEngine:
    """A model + tokenizer + token-level engine: text in, :class:`Result` out.

    Args:
        model: a model of the package (:class:`sambay.SambaYForCausalLM` or
            :class:`sambay.Phi4MiniForCausalLM`).
        tokenizer: its tokenizer; its ``stop_token_ids`` (``<|end|>`` and eos) end a generation.
        generation_config: sampling defaults (as :func:`read_generation_config` returns them)
            that override the reasoning defaults.
        engine_options: passed to :class:`sambay.generate.Engine` (``max_batch_size``,
            ``num_blocks``, ``memory_fraction``, ``cuda_graphs``, ``compile``, ``prefill_chunk``, ...).

    Requests run through one continuous-batching engine: :meth:`add` and :meth:`abort` from any
    thread, :meth:`step` (or the calls built on it: :meth:`run`, :meth:`generate`, :meth:`stream`,
    :meth:`solve`, :meth:`solve_many`) from any thread too, one step at a time.
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, *, generation_config: Mapping[str, Any] | None = None,
                 path: str | None = None, **engine_options: Any) -> None:
        vocab = int(model.config.vocab_size)
        if vocab > tokenizer.vocab_size:
            raise ValueError(f"the model's vocabulary ({vocab}) is larger than the tokenizer's ({tokenizer.vocab_size}): "
                             "they do not belong together")
        self.model = model
        self.tokenizer = tokenizer
        self.engine = Engine(model, **engine_options)
        config = dict(generation_config or {})
        self.stop_token_ids = frozenset(tokenizer.stop_token_ids) | frozenset(config.pop("stop_token_ids", ()))
        self.defaults = SamplingParams(**config)  # validated
        self.path = path
        self._step_lock = threading.Lock()
        self._live_lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self._ids = itertools.count()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, device: torch.device | str | None = None,
                        dtype: torch.dtype | str | None = None, quantize: str | None = None,
                        **kwargs: Any) -> ReasoningEngine:
        """Load a checkpoint folder: the model (``config.json`` + safetensors), its tokenizer
        (``tokenizer.json`` / ``tokenizer_config.json``, else Phi-4's via tiktoken) and its
        ``generation_config.json``. ``device`` defaults to CUDA when available, else CPU;
        ``dtype`` to the checkpoint's ``torch_dtype``; ``quantize="fp8"`` stores the projections in
        fp8 (:func:`sambay.load_model`); ``kwargs`` go to the engine."""
        from sambay import load_model

        folder = Path(path).expanduser()
        if not folder.exists():
            raise FileNotFoundError(f"model folder {str(path)!r} does not exist (give a local checkpoint folder "
                                    "with config.json, the safetensors weights and the tokenizer files)")
        if not folder.is_dir():
            raise NotADirectoryError(f"{str(path)!r} is a file; give the checkpoint folder that holds config.json")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{str(path)!r} has no config.json: it is not a checkpoint folder")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_model(folder, dtype=parse_dtype(dtype), device=device, quantize=quantize)
        tokenizer = load_tokenizer(folder)
        return cls(model, tokenizer, generation_config=read_generation_config(folder), path=str(folder), **kwargs)

    def __repr__(self) -> str:
        return (f"ReasoningEngine({type(self.model).__name__} on {self.model.device}, {self.model.dtype}, "
                f"path={self.path!r}, defaults={self.defaults})")

    @property
    def max_context(self) -> int:
        """Longest prompt + generation the model takes, in tokens."""
        return self.engine.max_context

    # -- prompts and settings ------------------------------------------------------------------

    def sampling(self, **overrides: Any) -> SamplingParams:
        """The sampling settings of a call: ``overrides`` (None values ignored) over this
        engine's defaults. Raises ValueError for a bad value, TypeError for an unknown name."""
        return sampling_with(self.defaults, **overrides)

    def prompt_text(self, prompt: Prompt, system: str | None = None, *, chat: bool = True) -> str:
        """The text the model continues: a question wrapped in the chat template (with an optional
        system message), a list of chat messages rendered by it, or (``chat=False``) a string as is."""
        check_prompt(prompt, chat=chat)
        if isinstance(prompt, str):
            if not chat:
                if system is not None:
                    raise ValueError("system needs chat=True")
                return prompt
            return self.tokenizer.chat_prompt(prompt, system)
        messages = [dict(m) for m in prompt]
        if system is not None and not (messages and messages[0].get("role") == "system"):
            messages.insert(0, {"role": "system", "content": system})
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def _prepare(self, prompt: Prompt, params: SamplingParams, system: str | None, chat: bool,
                 name: str = "the prompt") -> _Item:
        """Encode a prompt and check it fits: a prompt that leaves no room in the context is an
        error; a ``max_new_tokens`` past the room is capped when it is this engine's default and an
        error when it was asked for."""
        text = self.prompt_text(prompt, system, chat=chat)
        ids = self.tokenizer.encode(text)
        vocab = int(self.model.config.vocab_size)
        if not ids:
            raise ValueError(f"{name} is empty")
        if max(ids) >= vocab:
            raise ValueError(f"{name} has token id {max(ids)}, outside the model's vocabulary of {vocab}: "
                             "the tokenizer does not belong to this model")
        room = self.max_context - len(ids)
        if room < 1:
            raise ValueError(f"{name} has {len(ids)} tokens; the model's context is {self.max_context} tokens, "
                             "which leaves no room to generate: shorten the prompt")
        if params.max_new_tokens > room:
            if params.max_new_tokens != self.defaults.max_new_tokens:
                raise ValueError(
                    f"{name} ({len(ids)} tokens) + max_new_tokens={params.max_new_tokens} exceeds the "
                    f"model's context of {self.max_context} tokens: lower max_new_tokens to at most {room}")
            params = replace(params, max_new_tokens=room)
        return _Item(text, ids, params)

    # -- running -------------------------------------------------------------------------------

    def add(self, prompt: Prompt, params: SamplingParams | None = None, *, system: str | None = None,
            chat: bool = True, stop: Sequence[str] = (), on_text: Callable[[str], None] | None = None,
            request_id: str | None = None) -> str:
        """Queue one prompt; returns its request id. ``on_text(delta)`` receives its text as it is
        produced (from the stepping thread); ``stop`` strings end it (the text ends before the
        first). Raises ValueError for a prompt that cannot fit the context (with the reason),
        TypeError for something that is not a prompt."""
        if not isinstance(prompt, (str, Sequence)) or (not isinstance(prompt, str) and not all(
                isinstance(m, Mapping) for m in prompt)):
            raise TypeError(f"a prompt is a string or a list of chat messages (mappings), got {type(prompt).__name__}")
        if params is not None and not isinstance(params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams (see sampling()), got {type(params).__name__}")
        return self._submit(self._prepare(prompt, params or self.defaults, system, chat), stop, on_text, request_id)

    def _submit(self, item: _Item, stop: Sequence[str], on_text: Callable[[str], None] | None,
                request_id: str | None) -> str:
        live = _Live(item, _RowText(self.tokenizer, [s for s in stop if s], self.stop_token_ids), on_text)

        def should_stop(tokens: list[int]) -> bool:  # the stepping thread, after every token
            live.feed(tokens[-1])
            return live.row.stopped_by is not None or live.error is not None

        with self._live_lock:
            rid = request_id if request_id is not None else f"text-{next(self._ids)}"
            if rid in self._live:
                raise ValueError(f"request id {rid!r} is already in use")
            self._live[rid] = live
        try:
            # A stop string is decided before the next step is planned (its text inside engine.step());
            # other requests' text is made in step() below, while the engine's next step computes.
            self.engine.add(Request(item.ids, item.params, sorted(self.stop_token_ids),
                                    should_stop if live.row.stop else None, rid))
        except BaseException:
            with self._live_lock:
                self._live.pop(rid, None)
            raise
        return rid

    def abort(self, request_id: str) -> None:
        """End a request at the next step (finish_reason "abort")."""
        self.engine.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished()

    def step(self) -> list[Result]:
        """One engine step; the Results of the requests that finished in it."""
        # The text of a step is made under the step lock too (each row's tokens in order, whichever
        # thread steps); with lookahead the engine's next step is already computing meanwhile.
        with self._step_lock:
            outputs = self.engine.step()
            batch = self.engine.last_batch
            results = []
            for out in outputs:
                with self._live_lock:
                    live = (self._live.pop if out.finished else self._live.get)(out.request_id, None)
                if live is None:
                    continue
                live.batch = max(live.batch, batch)
                if not live.row.stop:  # (with stop strings the text went in with the stop check)
                    for token in out.new_tokens:
                        live.feed(token)
                    if live.error is not None and not out.finished:
                        self.engine.abort(out.request_id)  # its callback failed: it ends, with the error
                if out.finished:
                    live.result = self._result(out.request_id, live, out.generation)
                    results.append(live.result)
        return results

    def _result(self, request_id: str, live: _Live, gen: Generation) -> Result:
        row = live.row
        live.emit(row.finish())
        stopped_by = row.stopped_by
        if gen.finish_reason == "stop" and gen.tokens and gen.tokens[-1] in self.stop_token_ids:
            stopped_by = self.tokenizer.decode(gen.tokens[-1:])
        reason, error = (gen.finish_reason, gen.error) if live.error is None else ("error", live.error)
        stats = Stats(prompt_tokens=gen.prompt_tokens, generated_tokens=len(gen.tokens),
                      prefill_seconds=gen.prefill_seconds, decode_seconds=gen.decode_seconds,
                      finish_reason=reason, stop=stopped_by if error is None else None, batch_size=live.batch,
                      error=error)
        return Result(live.item.prompt, row.final, gen.tokens, stats, live.item.params, request_id=request_id)

    def _run_items(self, items: Sequence[_Item], *, stop: Sequence[str] = (),
                   on_text: Callable[[int, str], None] | None = None,
                   on_result: Callable[[int, Result], None] | None = None, progress: bool | None | Any = None,
                   cancel: threading.Event | None = None, in_flight: int | None = None) -> list[Result]:
        """Every item through the engine (at most ``in_flight`` of them queued at once); results in order."""
        if not items:
            return []
        own_bar = not hasattr(progress, "update")  # else a bar shared by several calls
        if own_bar:
            show = (on_text is None and sys.stderr.isatty()) if progress is None else bool(progress)
            bar = tqdm(desc="generating", unit="tok", disable=not show, delay=1.0, leave=False, dynamic_ncols=True)
        else:
            bar = progress
        rids: list[str] = []
        lives: list[_Live] = []
        reported: set[int] = set()
        counted = 0
        limit = len(items) if in_flight is None else in_flight
        try:
            while True:
                while len(rids) < len(items) and len(rids) - len(reported) < limit and not (cancel and cancel.is_set()):
                    i = len(rids)
                    cb = None if on_text is None else (lambda delta, i=i: on_text(i, delta))
                    rids.append(self._submit(items[i], stop, cb, None))
                    with self._live_lock:
                        lives.append(self._live[rids[-1]])
                if cancel is not None and cancel.is_set():
                    for rid, live in zip(rids, lives):
                        if live.result is None:
                            self.abort(rid)
                    if len(rids) < len(items):
                        items = items[:len(rids)]
                if len(reported) == len(items):
                    break
                self.step()
                now = sum(live.generated for live in lives)
                bar.update(now - counted)
                counted = now
                for i, live in enumerate(lives):
                    if live.result is not None and i not in reported:
                        reported.add(i)
                        if on_result is not None:
                            on_result(i, live.result)
        finally:
            for rid, live in zip(rids, lives):
                if live.result is None:
                    self.abort(rid)
            if own_bar:
                bar.close()
        return [live.result for live in lives]

    def run(self, items: Iterable[tuple[Prompt, SamplingParams]], *, system: str | None = None,
            stop: Sequence[str] = (), on_result: Callable[[int, Result], None] | None = None,
            progress: bool | None | Any = None, in_flight: int | None = None) -> list[Result]:
        """Every ``(prompt, params)`` through the continuous engine; results in order, and
        ``on_result(index, result)`` as each finishes. Every prompt is checked before any runs.
        ``in_flight`` caps how many of these are queued at once (default: all)."""
        pairs = list(items)
        prepared = [self._prepare(prompt, params, system, True, "the prompt" if len(pairs) == 1 else f"prompt {i}")
                    for i, (prompt, params) in enumerate(pairs)]
        return self._run_items(prepared, stop=stop, on_result=on_result, progress=progress, in_flight=in_flight)

    def _batch(self, prompts: Prompt | Sequence[Prompt]) -> tuple[list[Prompt], bool]:
        """(prompts as a list, whether a single prompt was given); TypeError for what is neither."""
        if not isinstance(prompts, Sequence) or isinstance(prompts, (bytes, bytearray)):
            raise TypeError(f"{WHAT_A_PROMPT_IS} (or a list of prompts); got {type(prompts).__name__} {prompts!r:.80}")
        single = isinstance(prompts, str) or (len(prompts) > 0 and isinstance(prompts[0], Mapping))
        return ([prompts] if single else list(prompts)), single

    def generate(self, prompts: Prompt | Sequence[Prompt], *, system: str | None = None, stop: Sequence[str] = (),
                 on_text: Callable[[int, str], None] | None = None, progress: bool | None = None, chat: bool = True,
                 temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                 max_new_tokens: int | None = None, seed: int | None = None) -> Result | list[Result]:
        """Generate for one prompt (a question string or a list of chat messages; returns a
        :class:`Result`) or a batch of prompts of any lengths (returns a list, in order).

        Args:
            system: a system message for the chat template.
            stop: stop strings; a row ends when its text contains one, and the returned text
                ends just before it (the stop string is not included).
            on_text: ``on_text(index, delta)`` receives each prompt's text as it is produced;
                the deltas of a prompt concatenate to its ``Result.text``.
            progress: a tqdm bar of generated tokens on stderr; None shows it on a terminal
                when nothing streams, after the first second.
            chat: False feeds string prompts to the model as they are (no chat template).
            temperature, top_p, top_k, max_new_tokens, seed: sampling settings (None: this
                engine's defaults). Each prompt samples the same tokens for a seed whether it
                runs alone or in a batch.

        Raises:
            ValueError: a bad sampling value, or a prompt that does not fit the model's context.
        """
        batch, single = self._batch(prompts)
        params = self.sampling(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                               seed=seed)
        items = self._prepare_many(batch, params, system, chat)
        results = self._run_items(items, stop=stop, on_text=on_text, progress=progress)
        return results[0] if single else results

    def stream(self, prompts: Prompt | Sequence[Prompt], **kwargs: Any) -> TextStream:
        """:meth:`generate` as an iterator: for one prompt it yields text deltas, for a batch
        ``(index, delta)`` pairs. The results are on the stream once it is exhausted
        (``.result`` / ``.results``). Leaving the loop early stops the generation.
        Arguments (except ``on_text``) as for :meth:`generate`; they are checked at this call."""
        if "on_text" in kwargs:
            raise TypeError("stream() yields the text; it takes no on_text")
        batch, single = self._batch(prompts)
        sampling = {k: kwargs.pop(k, None) for k in SAMPLING_KEYS}
        system, chat = kwargs.pop("system", None), kwargs.pop("chat", True)
        run_kwargs = {"stop": kwargs.pop("stop", ()), "progress": kwargs.pop("progress", False)}
        if kwargs:
            raise TypeError(f"unexpected argument(s) {sorted(kwargs)}")
        params = self.sampling(**sampling)
        items = self._prepare_many(batch, params, system, chat)
        return TextStream(lambda on_text, cancel: self._run_items(items, on_text=on_text, cancel=cancel, **run_kwargs),
                          single)

    def solve(self, problem: Prompt, *, reference: str | None = None, **kwargs: Any) -> Result:
        """:meth:`generate` for one problem, checked against ``reference`` when given."""
        batch, single = self._batch(problem)
        if not single:
            raise TypeError("solve() takes one problem (a string or a list of chat messages); use solve_many()")
        return self.generate(problem, **kwargs).with_reference(reference)

    def solve_many(self, problems: Sequence[Prompt], *, references: Sequence[str | None] | None = None,
                   batch_size: int = 8, progress: bool | None = None, system: str | None = None,
                   stop: Sequence[str] = (), **sampling: Any) -> list[Result]:
        """Solve problems, ``batch_size`` of them in flight at a time (a new one joins as one
        finishes), checked against ``references`` when given."""
        if references is not None and len(references) != len(problems):
            raise ValueError(f"{len(problems)} problems but {len(references)} references")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        params = self.sampling(**sampling)
        show = sys.stderr.isatty() if progress is None else progress
        with tqdm(desc="solving", unit="tok", disable=not show, delay=1.0, dynamic_ncols=True) as bar:
            results = self._run_items(self._prepare_many(list(problems), params, system, True), stop=stop,
                                      progress=bar, in_flight=batch_size)
        refs = references if references is not None else [None] * len(results)
        return [r.with_reference(ref) for r, ref in zip(results, refs)]

    def _prepare_many(self, prompts: Sequence[Prompt], params: SamplingParams, system: str | None,
                      chat: bool) -> list[_Item]:
        return [self._prepare(p, params, system, chat, "the prompt" if len(prompts) == 1 else f"prompt {i}")
                for i, p in enumerate(prompts)]


class TextStream:
    """An iterator over the text of a running generation (see :meth:`ReasoningEngine.stream`).

    The generation runs in a background thread and hands text over through a queue; leaving
    the loop (``break``, an exception) cancels it and waits for the thread to end.
    """

    def __init__(self, run: Callable[[Callable[[int, str], None], threading.Event], list[Result]], single: bool) -> None:
        self._run = run
        self.single = single
        self.results: list[Result] | None = None
        self._started = False

    @property
    def result(self) -> Result:
        """The result of a single-prompt stream, once it is exhausted."""
        if self.results is None:
            raise RuntimeError("the stream has not finished yet: iterate it to the end first")
        return self.results[0]

    def __iter__(self) -> Iterator[Any]:
        if self._started:
            raise RuntimeError("a TextStream can be iterated only once")
        self._started = True
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        q: queue.Queue = queue.Queue()
        cancel = threading.Event()
        done = object()
        error: list[BaseException] = []

        def work() -> None:
            try:
                self.results = self._run(lambda i, delta: q.put((i, delta)), cancel)
            except BaseException as e:  # handed to the consumer
                error.append(e)
            finally:
                q.put(done)

        thread = threading.Thread(target=work, name="reasoning-stream", daemon=True)
        thread.start()
        try:
            while (item := q.get()) is not done:
                yield item[1] if self.single else item
            if error:
                raise error[0]
        finally:
            cancel.set()
            thread.join()
