"""The ``"tiktoken"`` back end: Phi-4-mini rebuilt offline from the o200k_base BPE ranks, the
o200k split pattern and the Phi-4 special tokens at their official ids."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import tiktoken

from .o200k import O200K_PATTERN, find_o200k_bpe, read_o200k_ranks
from .phi4 import PHI4_SPECIAL_TOKENS, PHI4_VOCAB_SIZE


class TiktokenBackend:
    """Phi-4-mini: o200k_base BPE + Phi special tokens, vocab padded to 200064."""

    kind = "tiktoken"

    def __init__(self, ranks: dict[bytes, int], special_tokens: dict[str, int], vocab_size: int) -> None:
        self._encoding = tiktoken.Encoding(
            name="phi4_o200k", pat_str=O200K_PATTERN, mergeable_ranks=ranks, special_tokens=special_tokens
        )
        self.vocab_size = vocab_size
        self.special_tokens = dict(special_tokens)
        self._special_set = frozenset(special_tokens)
        # Ids with no token, which tiktoken would refuse (KeyError); few, so cheap to test.
        known = set(ranks.values()) | set(special_tokens.values())
        self._holes = frozenset(i for i in range(vocab_size) if i not in known)

    def encode(self, text: str, allow_special: bool) -> list[int]:
        if allow_special:
            return self._encoding.encode(text, allowed_special=self._special_set)
        return self._encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        if not self._holes.isdisjoint(ids):
            ids = [i for i in ids if i not in self._holes]
        return self._encoding.decode(ids, errors="replace")

    def token_to_id(self, token: str) -> int | None:
        if token in self.special_tokens:
            return self.special_tokens[token]
        try:
            return self._encoding.encode_single_token(token.encode("utf-8"))
        except KeyError:
            return None


@functools.lru_cache(maxsize=4)
def _phi4_backend_from_file(path: str) -> TiktokenBackend:
    """The Phi-4 tiktoken backend for one BPE file, built once (it takes ~0.5 s)."""
    return TiktokenBackend(read_o200k_ranks(Path(path)), PHI4_SPECIAL_TOKENS, PHI4_VOCAB_SIZE)


def phi4_backend(bpe_file: str | os.PathLike[str] | None) -> TiktokenBackend:
    return _phi4_backend_from_file(str(find_o200k_bpe(bpe_file).resolve()))

