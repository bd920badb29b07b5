"""Streaming detokenization: generated token ids in, text deltas out, never splitting a UTF-8
character."""

from __future__ import annotations

from .tokenizer import Tokenizer

REPLACEMENT_CHAR = "\ufffd"  # what a decode shows for bytes that are not (yet) a whole character


class StreamDecoder:
    """Incremental detokenization: feed generated ids one at a time, get new text back.

    A byte-level BPE token can end in the middle of a multi-byte UTF-8 character; such
    text is held back until the character is complete, so no delta carries a broken
    fragment. ``"".join(deltas) + flush()`` equals ``tokenizer.decode(all_ids)``.

    Method (as in vLLM / text-generation-inference): the text of the pending tokens is the
    decode of [last emitted segment + pending tokens] minus the decode of the last emitted
    segment. The segment gives decoders that treat a leading token specially (e.g.
    SentencePiece's leading space) the context they need. Pending text that ends in U+FFFD
    is an incomplete character and is held. Segment boundaries then fall on complete
    characters, so for byte-level BPE (both backends here) the deltas add up exactly to
    the full decode. Text that really ends in U+FFFD is delayed to the next token or flush.

    Args:
        tokenizer: the tokenizer that produced the ids.
        skip_special: leave special tokens out of the text.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special: bool = False) -> None:
        self._tokenizer = tokenizer
        self._skip_special = skip_special
        self._ids: list[int] = []  # last emitted segment, then the pending ids
        self._read = 0  # self._ids[:self._read] is the emitted segment
        self._prefix_text = ""  # its decode

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode_checked(ids, skip_special=self._skip_special)

    def feed(self, token_id: int) -> str:
        """Add one token id; return the text it completes (possibly ``""``)."""
        ids = [*self._ids, self._tokenizer.check_id(token_id)]  # checked before it is kept
        text = self._decode(ids)
        self._ids = ids
        if text.endswith(REPLACEMENT_CHAR) or len(text) <= len(self._prefix_text):
            return ""
        delta = text[len(self._prefix_text) :]
        # The pending tokens become the context segment for what follows.
        self._ids = self._ids[self._read :]
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids)
        return delta

    def flush(self) -> str:
        """Return any held-back text (U+FFFD for an unfinished character) and reset."""
        text = self._decode(self._ids)
        delta = text[len(self._prefix_text) :]
        self._ids, self._read, self._prefix_text = [], 0, ""
        return delta

