"""One request's state: its tokens, where it is in its life, its blocks and slot, its timings."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from .sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"  # queued (new, or preempted and to be recomputed)
    PREFILLING = "prefilling"  # its prompt (+ tokens generated before a preemption) is being computed
    RUNNING = "running"  # decoding, one token per step
    FINISHED = "finished"


def decode_tokens_per_second(tokens: int, seconds: float) -> float | None:
    """The one definition of decode speed in the package: tokens after the first (the first comes
    out of the prefill) per second from the first token to the last; None below two tokens."""
    if tokens < 2 or seconds <= 0:
        return None
    return (tokens - 1) / seconds


@dataclass(eq=False)
class Sequence:
    """A request inside the engine. ``num_cached`` tokens of ``prompt + tokens`` have their state
    in the cache; a running sequence has all but its last sampled token cached. ``pending``
    tokens are sampled on the device and not yet read back (the engine's lookahead launches the
    next step before reading this one's): they count in ``num_tokens`` (the next token's position
    and blocks), not in ``tokens``."""

    request_id: str
    prompt: list[int]
    params: SamplingParams
    stop_token_ids: frozenset[int]
    should_stop: Callable[[list[int]], bool] | None
    long_rope: bool  # the dense model's LongRoPE list, decided once from prompt + max_new_tokens
    tokens: list[int] = field(default_factory=list)
    pending: int = 0
    status: Status = Status.WAITING
    blocks: list[int] = field(default_factory=list)
    num_cached: int = 0
    slot: int | None = None
    admitted: int = -1  # admission order: the most recent is preempted first
    finish_reason: str | None = None
    error: str | None = None
    prefill_start: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt) + len(self.tokens) + self.pending

    @property
    def generated(self) -> int:
        """Tokens sampled so far, those still on the device included."""
        return len(self.tokens) + self.pending

    @property
    def out_of_budget(self) -> bool:
        """Its last token (``max_new_tokens``) is sampled and still on the device: a step launched
        before that token is read back computes nothing for it."""
        return self.pending > 0 and self.generated >= self.params.max_new_tokens

    def tokens_between(self, start: int, end: int) -> list[int]:
        assert not self.pending, "tokens still on the device"
        return (self.prompt + self.tokens)[start:end]

    def append(self, token: int, now: float) -> None:
        """A sampled token, at ``now`` (the step's clock, read once for all its rows)."""
        if self.first_token_time is None:
            self.first_token_time = now
        self.last_token_time = now
        self.tokens.append(token)

    def check_stop(self) -> str | None:
        """The finish reason after the last appended token, if it ends the request."""
        if self.tokens[-1] in self.stop_token_ids or (self.should_stop is not None and self.should_stop(self.tokens)):
            return "stop"
        if len(self.tokens) >= self.params.max_new_tokens:
            return "length"
        return None

    @property
    def prefill_seconds(self) -> float:
        if self.prefill_start is None or self.first_token_time is None:
            return 0.0
        return self.first_token_time - self.prefill_start

    @property
    def decode_seconds(self) -> float:
        if self.first_token_time is None:
            return 0.0
        return self.last_token_time - self.first_token_time
