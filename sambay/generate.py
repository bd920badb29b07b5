"""The generation engine shared by both models: chunked prefill, a one-token decode step
(captured as a CUDA graph on GPUs), and sampling.

Token-level only; text, chat prompts, stop strings and answers live in ``reasoning/``.

    engine = Engine(model)
    outs = engine.generate([[1, 2, 3], [4, 5]], SamplingParams(temperature=0.0, max_new_tokens=32))
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from layers import backends

from .cache import CacheBase

log = logging.getLogger("sambay")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token. ``temperature=0`` is greedy; the defaults are the
    recommended reasoning settings of Phi-4-mini-flash-reasoning."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0  # 0: no top-k cut
    max_new_tokens: int = 32768
    seed: int = 0

    def __post_init__(self) -> None:
        # Booleans are ints to Python, not numbers here; nor are strings such as "0.5".
        if not (_number(self.temperature) and math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not (_number(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (_integer(self.top_k) and self.top_k >= 0):
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not (_integer(self.max_new_tokens) and self.max_new_tokens >= 1):
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not (_integer(self.seed) and self.seed >= 0):
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")


def _integer(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def uniform(seed: int, step: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, step): a row samples the same
    tokens alone or inside any batch."""
    h = hashlib.blake2b(f"{seed}:{step}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
           u: torch.Tensor) -> torch.Tensor:
    """One token per row of logits (B, V), each row with its own settings (B,) and uniform
    number ``u`` (B,): inverse-CDF sampling over the tokens top-k and top-p keep (the most
    likely token is always kept). Rows with temperature 0 take the argmax."""
    logits = logits.float()
    greedy = logits.argmax(-1)
    probs = torch.softmax(logits / temperature.clamp(min=1e-6)[:, None], dim=-1)
    p_sorted, order = probs.sort(dim=-1, descending=True)
    before = p_sorted.cumsum(-1) - p_sorted  # mass of the more likely tokens
    rank = torch.arange(logits.shape[-1], device=logits.device)
    keep = (before < top_p[:, None]) & ((top_k[:, None] == 0) | (rank < top_k[:, None]))
    keep[:, 0] = True
    p_sorted = p_sorted * keep
    cdf = p_sorted.cumsum(-1)
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=logits.shape[-1] - 1)
    sampled = order.gather(-1, pick)[:, 0]
    return torch.where(temperature == 0, greedy, sampled)


@dataclass
class Request:
    """One prompt to continue, with its own sampling settings."""

    prompt: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class Generation:
    """The result of one request."""

    tokens: list[int]  # generated tokens, the stop token included when one ended it
    finish_reason: str  # "stop" (a stop token or stop condition) or "length"
    prompt_tokens: int
    prefill_seconds: float
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        return len(self.tokens) / self.decode_seconds if self.decode_seconds > 0 else float("nan")


class DecodeGraph:
    """A CUDA graph of one decode step (``step(ids, cache)``, e.g. ``model.decode_step`` or its
    compiled form) over a fixed cache: static input, output and buffers."""

    def __init__(self, step: Callable[[torch.Tensor, CacheBase], torch.Tensor], cache: CacheBase) -> None:
        self.cache = cache
        self.ids = torch.zeros(cache.batch_size, 1, dtype=torch.long, device=cache.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm up: kernel selection, Triton / inductor compilation
                step(self.ids, cache)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.logits = step(self.ids, cache)[:, -1]
        cache.reset()  # the warm-up wrote garbage; capture itself ran nothing on the device

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.cache.check_room(ids.shape[0], 1)
        self.ids.copy_(ids)
        self.graph.replay()
        self.cache.length += 1  # the graph advanced the device-side seqlen
        return self.logits.clone()  # the next replay overwrites the static output


class Engine:
    """Runs a model of the package (SambaY or dense): prefill in chunks, decode one token at a
    time with a preallocated cache, and sample.

    ``cuda_graphs`` (default: on for CUDA models) captures the decode step once per (batch size,
    max length) and replays it; ``compile`` runs the step through ``torch.compile`` first (fuses
    the small ops between the big kernels; the first step of each new shape compiles).
    ``prefill_chunk`` bounds prefill activations for long prompts.
    """

    def __init__(self, model: nn.Module, *, cuda_graphs: bool | None = None, compile: bool = False,
                 prefill_chunk: int = 8192) -> None:
        self.model = model.eval()
        decode_step = model.decode_step
        if compile:
            # One static graph per (batch, cache length): a dynamic one is slower to run. Inductor
            # rounds between fused ops where eager rounds, so compiled numerics are eager's. No
            # matmul padding: its search allocates weight-sized tensors, and decode has no use for it.
            decode_step = torch.compile(model.decode_step, fullgraph=True, dynamic=False,
                                        options={"emulate_precision_casts": True, "shape_padding": False})

        def step_with_backends(ids: torch.Tensor, cache: CacheBase) -> torch.Tensor:
            # The model's kernels, in whichever thread steps (and captures the graph).
            with backends.activate(model.backends):
                return decode_step(ids, cache)

        self.decode_step = step_with_backends
        self.device = model.device
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and self.device.type != "cuda":
            raise ValueError("cuda_graphs needs a model on a CUDA device")
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        self.prefill_chunk = prefill_chunk
        self._slots: dict[tuple[int, int], tuple[CacheBase, DecodeGraph | None]] = {}  # most recent last

    @property
    def max_context(self) -> int:
        """Longest sequence (prompt + generation) the model supports."""
        return int(self.model.config.max_position_embeddings)

    def slot(self, batch_size: int, max_seq_len: int) -> tuple[CacheBase, Callable[[torch.Tensor], torch.Tensor]]:
        """A reset cache for ``batch_size`` rows of at least ``max_seq_len`` tokens and the decode
        step over it. The two most recent are kept for reuse. With CUDA graphs the length is rounded
        up to a multiple of 4096 (a graph is captured per shape); without, to 64 (an eager step
        reads the whole buffer)."""
        bucket = 4096 if self.cuda_graphs else 64
        key = (batch_size, min(self.max_context, -(-max_seq_len // bucket) * bucket))
        if key in self._slots:
            self._slots[key] = self._slots.pop(key)
        else:
            while len(self._slots) >= 2:
                self._slots.pop(next(iter(self._slots)))
            cache = self.model.allocate_cache(*key)
            self._slots[key] = (cache, DecodeGraph(self.decode_step, cache) if self.cuda_graphs else None)
        cache, graph = self._slots[key]
        cache.reset()
        if graph is not None:
            return cache, graph

        def step(ids: torch.Tensor) -> torch.Tensor:
            cache.check_room(ids.shape[0], 1)
            logits = self.decode_step(ids, cache)[:, -1]
            cache.length += 1
            return logits

        return cache, step

    def release(self) -> None:
        """Free every cached buffer and graph."""
        self._slots.clear()

    @torch.no_grad()
    def prefill(self, cache: CacheBase, ids: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
        """Run left-padded prompts ``ids`` (B, T) (``start[b]`` pads in row b) into an empty
        cache, ``prefill_chunk`` tokens at a time; returns the last position's logits (B, V)."""
        if start is not None:
            cache.set_padding(start.to(cache.device))
        for i in range(0, ids.shape[1], self.prefill_chunk):
            out = self.model(ids[:, i:i + self.prefill_chunk], cache=cache, logits_to_keep=1)
        return out.logits[:, -1]

    @torch.no_grad()
    def generate(
        self,
        requests: Sequence[Request],
        *,
        stop_token_ids: Sequence[int] = (),
        should_stop: Callable[[int, list[int]], bool] | None = None,
        on_token: Callable[[int, int], None] | None = None,
    ) -> list[Generation]:
        """Continue every request's prompt as one batch.

        A row stops at a token in ``stop_token_ids``, when ``should_stop(row, tokens)`` says so
        (stop strings), or after its ``max_new_tokens``. ``on_token(row, token)`` sees every
        token as it is produced (streaming). Finished rows idle until the batch is done.
        """
        if not requests:
            return []
        for i, r in enumerate(requests):
            if not r.prompt:
                raise ValueError(f"request {i} has an empty prompt")
        lengths = [len(r.prompt) for r in requests]
        width = max(lengths)
        budget = width + max(r.params.max_new_tokens for r in requests)
        if budget > self.max_context:
            raise ValueError(f"prompt ({width} tokens) + max_new_tokens needs {budget} positions, more than the "
                             f"model's context of {self.max_context}; shorten the prompt or lower max_new_tokens")
        B, dev = len(requests), self.device
        ids = torch.zeros(B, width, dtype=torch.long)
        for b, r in enumerate(requests):
            ids[b, width - len(r.prompt):] = torch.tensor(r.prompt)
        start = torch.tensor([width - n for n in lengths])
        temperature = torch.tensor([float(r.params.temperature) for r in requests], device=dev)
        top_p = torch.tensor([float(r.params.top_p) for r in requests], device=dev)
        top_k = torch.tensor([r.params.top_k for r in requests], device=dev)
        stops = set(stop_token_ids)

        cache, step = self.slot(B, budget)
        t0 = time.perf_counter()
        logits = self.prefill(cache, ids.to(dev), start if start.any() else None)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        prefill_seconds = time.perf_counter() - t0

        outputs: list[list[int]] = [[] for _ in requests]
        reasons: list[str | None] = [None] * B
        t0 = time.perf_counter()
        for n in range(max(r.params.max_new_tokens for r in requests)):
            u = torch.tensor([uniform(r.params.seed, n) for r in requests], device=dev)
            tokens = sample(logits, temperature, top_p, top_k, u)
            for b, tok in enumerate(tokens.tolist()):
                if reasons[b] is not None:
                    continue
                outputs[b].append(tok)
                if on_token is not None:
                    on_token(b, tok)
                if tok in stops or (should_stop is not None and should_stop(b, outputs[b])):
                    reasons[b] = "stop"
                elif len(outputs[b]) >= requests[b].params.max_new_tokens:
                    reasons[b] = "length"
            if all(r is not None for r in reasons):
                break
            logits = step(tokens[:, None])
        decode_seconds = time.perf_counter() - t0
        return [Generation(outputs[b], reasons[b] or "length", lengths[b], prefill_seconds, decode_seconds)
                for b in range(B)]
