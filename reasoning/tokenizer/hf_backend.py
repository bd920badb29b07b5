"""The ``"hf"`` back end: a ``tokenizers.Tokenizer``, the contents of a ``tokenizer.json`` (read
with the light ``tokenizers`` library, not ``transformers``)."""

from __future__ import annotations

import tokenizers


class HFBackend:
    """A ``tokenizers.Tokenizer`` (the contents of a ``tokenizer.json``)."""

    kind = "hf"

    def __init__(self, tokenizer: tokenizers.Tokenizer, vocab_size: int | None = None) -> None:
        self.tokenizer = tokenizer
        # Special tokens are the added tokens flagged special in tokenizer.json.
        self.special_tokens = {
            added.content: token_id
            for token_id, added in sorted(tokenizer.get_added_tokens_decoder().items())
            if added.special
        }
        largest_id = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)
        # A checkpoint may pad its embedding beyond the tokenizer; those ids decode to "".
        self.vocab_size = max(largest_id + 1, vocab_size or 0)
        self._plain: tokenizers.Tokenizer | None = None

    def encode(self, text: str, allow_special: bool) -> list[int]:
        # add_special_tokens=False: no post-processor bos/eos; text in, ids out. Special
        # token strings in the text still become their ids, unless allow_special is False.
        tokenizer = self.tokenizer if allow_special else self._plain_tokenizer()
        return tokenizer.encode(text, add_special_tokens=False).ids

    def _plain_tokenizer(self) -> tokenizers.Tokenizer:
        """A copy that encodes special-token strings as ordinary text (made on first use)."""
        if self._plain is None:
            plain = tokenizers.Tokenizer.from_str(self.tokenizer.to_str())
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain

    def decode(self, ids: list[int]) -> str:
        # tokenizers skips ids with no token and decodes byte-level BPE with U+FFFD for bad
        # UTF-8, like the tiktoken backend. Special tokens are filtered by Tokenizer.
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

