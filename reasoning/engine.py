"""The text-level reasoning loop: prompts in, reasoning traces and checked answers out.

:class:`ReasoningEngine` holds a model of the package (SambaY or dense), its tokenizer and a
token-level :class:`sambay.generate.Engine`. It turns questions (or chat messages) into chat
prompts, runs them as one batch, stops each row on ``<|end|>`` / eos / stop strings /
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

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from sambay.config import ConfigError, read_config_json
from sambay.generate import Engine, Request, SamplingParams

from .answers import answers_match, extract_boxed, split_reasoning
from .tokenizer import StreamDecoder, Tokenizer, load_tokenizer

__all__ = ["DEFAULT_MODEL_DIR", "Prompt", "ReasoningEngine", "Result", "Stats", "TextStream", "parse_dtype",
           "read_generation_config"]

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
    """What one request cost. Rows of a batch share the prefill and the device, so
    ``prefill_seconds`` is the batch's and ``decode_seconds`` runs from the batch's first
    sampled token to this request's last one."""

    prompt_tokens: int
    generated_tokens: int  # every sampled token, the stop token included
    prefill_seconds: float
    decode_seconds: float
    finish_reason: str  # "stop" (stop token or string), "length" (max_new_tokens), "cancelled" (stream left early)
    stop: str | None = None  # what stopped it: the stop token's text (e.g. "<|end|>") or the stop string
    batch_size: int = 1

    @property
    def decode_tokens_per_second(self) -> float | None:
        """Tokens after the first (which comes from the prefill) per decode second; None for a
        single token."""
        if self.generated_tokens < 2 or self.decode_seconds <= 0:
            return None
        return (self.generated_tokens - 1) / self.decode_seconds

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
    the final text, and the final text ends before the first stop string.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str], stop_ids: frozenset[int]) -> None:
        self.decoder = StreamDecoder(tokenizer)
        self.stop = tuple(stop)
        self.longest = max(map(len, self.stop), default=0)
        self.firsts = {s[0] for s in self.stop}
        self.stop_ids = stop_ids
        self.text = ""  # decoded so far
        self.sent = 0  # text[:sent] was handed out
        self.cut: int | None = None  # where the first stop string starts
        self.stopped_by: str | None = None
        self.done = False

    def feed(self, token: int) -> str:
        """Add a generated token; return the text that can be handed out now."""
        if self.done or self.cut is not None or token in self.stop_ids:
            return ""
        old = len(self.text)
        self.text += self.decoder.feed(token)
        if not self.stop:
            return self._send(len(self.text))
        start = max(0, old - self.longest + 1)  # a new match must end in the new text
        hits = [(i, s) for s in self.stop if (i := self.text.find(s, start)) != -1]
        if hits:
            self.cut, self.stopped_by = min(hits)
            return self._send(self.cut)
        return self._send(len(self.text) - self._held())

    def _held(self) -> int:
        """Length of the longest suffix of the text that begins a stop string."""
        tail = self.text[max(0, len(self.text) - self.longest + 1):]
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
        if self.cut is None:
            self.text += self.decoder.flush()
            # A stop string can still complete in the flushed tail (an unfinished character).
            hits = [(i, s) for s in self.stop if (i := self.text.find(s, max(0, self.sent - self.longest))) != -1]
            if hits:
                self.cut, self.stopped_by = min(hits)
        return self._send(len(self.text) if self.cut is None else self.cut)

    @property
    def final(self) -> str:
        return self.text if self.cut is None else self.text[:self.cut]

    def _send(self, end: int) -> str:
        delta, self.sent = self.text[self.sent:end], max(self.sent, end)
        return delta


@dataclass
class _Item:
    """One prepared request: its prompt text, ids and sampling settings."""

    prompt: str
    ids: list[int]
    params: SamplingParams


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
        cuda_graphs, compile, prefill_chunk: passed to :class:`sambay.generate.Engine`.

    One generation runs at a time (calls from several threads take turns).
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, *, generation_config: Mapping[str, Any] | None = None,
                 cuda_graphs: bool | None = None, compile: bool = False, prefill_chunk: int = 8192,
                 path: str | None = None) -> None:
        vocab = int(model.config.vocab_size)
        if vocab > tokenizer.vocab_size:
            raise ValueError(f"the model's vocabulary ({vocab}) is larger than the tokenizer's ({tokenizer.vocab_size}): "
                             "they do not belong together")
        self.model = model
        self.tokenizer = tokenizer
        self.engine = Engine(model, cuda_graphs=cuda_graphs, compile=compile, prefill_chunk=prefill_chunk)
        config = dict(generation_config or {})
        self.stop_token_ids = frozenset(tokenizer.stop_token_ids) | frozenset(config.pop("stop_token_ids", ()))
        self.defaults = SamplingParams(**config)  # validated
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, device: torch.device | str | None = None,
                        dtype: torch.dtype | str | None = None, **kwargs: Any) -> ReasoningEngine:
        """Load a checkpoint folder: the model (``config.json`` + safetensors), its tokenizer
        (``tokenizer.json`` / ``tokenizer_config.json``, else Phi-4's via tiktoken) and its
        ``generation_config.json``. ``device`` defaults to CUDA when available, else CPU;
        ``dtype`` to the checkpoint's ``torch_dtype``; ``kwargs`` (``cuda_graphs``, ``compile``,
        ``prefill_chunk``) go to the engine."""
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
        model = load_model(folder, dtype=parse_dtype(dtype), device=device)
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
        engine's defaults. Raises ValueError for a bad value or an unknown name."""
        unknown = set(overrides) - set(SAMPLING_KEYS)
        if unknown:
            raise TypeError(f"unknown sampling setting(s) {sorted(unknown)}; expected {list(SAMPLING_KEYS)}")
        return replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})

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

    def _prepare(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams], explicit_max: bool,
                 system: str | None, chat: bool) -> list[_Item]:
        """Encode prompts and check they fit: a prompt longer than the context is an error; the
        default ``max_new_tokens`` is capped at the room the longest prompt of the batch leaves,
        an explicit one that does not fit is an error."""
        items = []
        vocab = int(self.model.config.vocab_size)

        def name(i: int) -> str:
            return "the prompt" if len(prompts) == 1 else f"prompt {i}"

        for i, (prompt, p) in enumerate(zip(prompts, params)):
            text = self.prompt_text(prompt, system, chat=chat)
            ids = self.tokenizer.encode(text)
            if not ids:
                raise ValueError(f"{name(i)} is empty")
            if max(ids) >= vocab:
                raise ValueError(f"{name(i)} has token id {max(ids)}, outside the model's vocabulary of {vocab}: "
                                 "the tokenizer does not belong to this model")
            items.append(_Item(text, ids, p))
        if not items:
            return items
        width = max(len(it.ids) for it in items)
        room = self.max_context - width
        longest = max(range(len(items)), key=lambda i: len(items[i].ids))
        if room < 1:
            raise ValueError(f"{name(longest)} has {width} tokens; the model's context is {self.max_context} tokens, "
                             "which leaves no room to generate: shorten the prompt")
        for it in items:
            if it.params.max_new_tokens > room:
                if explicit_max:
                    raise ValueError(
                        f"{name(longest)} ({width} tokens) + max_new_tokens={it.params.max_new_tokens} exceeds the "
                        f"model's context of {self.max_context} tokens: lower max_new_tokens to at most {room}")
                it.params = replace(it.params, max_new_tokens=room)
        return items

    # -- running -------------------------------------------------------------------------------

    def _run(self, items: Sequence[_Item], *, stop: Sequence[str] = (), on_text: Callable[[int, str], None] | None = None,
             progress: bool | None | Any = None, cancel: threading.Event | None = None) -> list[Result]:
        """Generate every item as one batch; ``on_text(row, delta)`` streams each row's text."""
        if not items:
            return []
        stop = [s for s in stop if s]
        rows = [_RowText(self.tokenizer, stop, self.stop_token_ids) for _ in items]
        counts = [0] * len(items)
        first: list[float] = []
        last = [0.0] * len(items)
        own_bar = not hasattr(progress, "update")  # else a bar shared by several batches
        if own_bar:
            show = (on_text is None and sys.stderr.isatty()) if progress is None else bool(progress)
            bar = tqdm(desc="generating", unit="tok", disable=not show, delay=1.0, leave=False, dynamic_ncols=True)
        else:
            bar = progress

        def emit(b: int, delta: str) -> None:
            if delta and on_text is not None:
                on_text(b, delta)

        def on_token(b: int, token: int) -> None:
            now = time.perf_counter()
            if not first:
                first.append(now)
            last[b] = now
            counts[b] += 1
            row = rows[b]
            emit(b, row.feed(token))
            if token in self.stop_token_ids or row.cut is not None or counts[b] >= items[b].params.max_new_tokens:
                emit(b, row.finish())
            bar.update(1)

        def should_stop(b: int, tokens: list[int]) -> bool:
            return rows[b].cut is not None or (cancel is not None and cancel.is_set())

        requests = [Request(it.ids, it.params) for it in items]
        try:
            with self._lock:
                generations = self.engine.generate(requests, stop_token_ids=sorted(self.stop_token_ids),
                                                   should_stop=should_stop, on_token=on_token)
        finally:
            if own_bar:
                bar.close()
        results = []
        for b, (it, gen, row) in enumerate(zip(items, generations, rows)):
            cancelled = not row.done and row.cut is None and gen.finish_reason == "stop"
            emit(b, row.finish())
            stopped_by = row.stopped_by
            if gen.finish_reason == "stop" and gen.tokens and gen.tokens[-1] in self.stop_token_ids:
                stopped_by = self.tokenizer.decode(gen.tokens[-1:])
            decode_seconds = last[b] - first[0] if first else gen.decode_seconds
            stats = Stats(prompt_tokens=gen.prompt_tokens, generated_tokens=len(gen.tokens),
                          prefill_seconds=gen.prefill_seconds, decode_seconds=decode_seconds,
                          finish_reason="cancelled" if cancelled else gen.finish_reason, stop=stopped_by,
                          batch_size=len(items))
            results.append(Result(it.prompt, row.final, gen.tokens, stats, it.params))
        return results

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
        items = self._prepare(batch, [params] * len(batch), max_new_tokens is not None, system, chat)
        results = self._run(items, stop=stop, on_text=on_text, progress=progress)
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
        items = self._prepare(batch, [params] * len(batch), sampling["max_new_tokens"] is not None, system, chat)
        return TextStream(lambda on_text, cancel: self._run(items, on_text=on_text, cancel=cancel, **run_kwargs),
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
        """Solve problems ``batch_size`` at a time (checked against ``references`` when given)."""
        if references is not None and len(references) != len(problems):
            raise ValueError(f"{len(problems)} problems but {len(references)} references")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        params = self.sampling(**sampling)
        explicit_max = sampling.get("max_new_tokens") is not None
        show = sys.stderr.isatty() if progress is None else progress
        results: list[Result] = []
        with tqdm(desc="solving", unit="tok", disable=not show, delay=1.0, dynamic_ncols=True) as bar:
            for i in range(0, len(problems), batch_size):
                chunk = list(problems[i:i + batch_size])
                items = self._prepare(chunk, [params] * len(chunk), explicit_max, system, True)
                results += self._run(items, stop=stop, progress=bar)
        refs = references if references is not None else [None] * len(results)
        return [r.with_reference(ref) for r, ref in zip(results, refs)]


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
