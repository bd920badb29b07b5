"""The :class:`Tokenizer`: text <-> token ids and chat prompts, over either back end."""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import jinja2
import tokenizers

from .chat_template import chat_environment
from .hf_backend import HFBackend
from .phi4 import PHI4_BOS_TOKEN, PHI4_CHAT_TEMPLATE, PHI4_END_TOKEN, PHI4_EOS_TOKEN, PHI4_PAD_TOKEN
from .tiktoken_backend import phi4_backend


class Backend(Protocol):
    """What :class:`Tokenizer` needs from a tokenization library."""

    kind: str
    vocab_size: int  # ids are in [0, vocab_size); some may have no token
    special_tokens: dict[str, int]

    def encode(self, text: str, allow_special: bool) -> list[int]: ...

    def decode(self, ids: list[int]) -> str:
        """Text of in-range ids; ids without a token contribute ""; bad UTF-8 -> U+FFFD."""
        ...

    def token_to_id(self, token: str) -> int | None: ...



class Tokenizer:
    """Text <-> token ids and chat prompts, over a ``tokenizers`` or a tiktoken backend.

    Build one with :func:`load_tokenizer`, :meth:`Tokenizer.phi4` or
    :meth:`Tokenizer.from_hf` rather than with the constructor.

    Ids in ``[0, vocab_size)`` that have no token decode to ``""``; ids outside that range
    raise ``ValueError``. ``token_to_id`` takes a token in the backend's own spelling:
    special tokens are the same in both, but an ordinary token is its text for tiktoken
    (``" world"``) and its byte-level form for a byte-level ``tokenizer.json``
    (``"Ġworld"``).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        chat_template: str | None = None,
        eos_token: str = PHI4_EOS_TOKEN,
        bos_token: str | None = None,
        pad_token: str | None = None,
    ) -> None:
        self._backend = backend
        self._chat_template_source = chat_template
        self._compiled_template: jinja2.Template | None = None
        self.eos_token = eos_token
        self.bos_token = bos_token
        self.pad_token = pad_token if pad_token is not None else eos_token
        self._eos_id = self._require_id(eos_token, "eos_token")
        self._pad_id = self._require_id(self.pad_token, "pad_token")
        self._bos_id = self._require_id(bos_token, "bos_token") if bos_token is not None else None
        self._end_id = backend.token_to_id(PHI4_END_TOKEN)
        self._special_ids = frozenset(backend.special_tokens.values())

    def _require_id(self, token: str, role: str) -> int:
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{role} {token!r} is not in the tokenizer's vocabulary")
        return token_id

    # -- construction --------------------------------------------------------------------

    @classmethod
    def phi4(
        cls, bpe_file: str | os.PathLike[str] | None = None, *, chat_template: str | None = None
    ) -> Tokenizer:
        """The Phi-4-mini tokenizer, built from o200k_base via tiktoken, fully offline.

        Args:
            bpe_file: the o200k_base BPE file; when None it is found as described in
                :func:`find_o200k_bpe` (``$SAMBAY_O200K_BPE``, then tiktoken's cache).
            chat_template: a jinja2 chat template; None means :data:`PHI4_CHAT_TEMPLATE`.
        """
        return cls(
            phi4_backend(bpe_file),
            chat_template=chat_template,
            eos_token=PHI4_EOS_TOKEN,
            bos_token=PHI4_BOS_TOKEN,
            pad_token=PHI4_PAD_TOKEN,
        )

    @classmethod
    def from_hf(
        cls,
        tokenizer: tokenizers.Tokenizer,
        *,
        chat_template: str | None = None,
        eos_token: str = PHI4_EOS_TOKEN,
        bos_token: str | None = None,
        pad_token: str | None = None,
        vocab_size: int | None = None,
    ) -> Tokenizer:
        """Wrap an in-memory ``tokenizers.Tokenizer`` (e.g. one just trained).

        Args:
            tokenizer: the ``tokenizers`` object; its added tokens flagged special are the
                special tokens.
            chat_template: a jinja2 chat template; None means :data:`PHI4_CHAT_TEMPLATE`.
            eos_token, bos_token, pad_token: token strings (pad defaults to eos).
            vocab_size: the model's vocabulary size when its embedding is padded past the
                tokenizer's largest id; the extra ids decode to ``""``.
        """
        return cls(
            HFBackend(tokenizer, vocab_size),
            chat_template=chat_template,
            eos_token=eos_token,
            bos_token=bos_token,
            pad_token=pad_token,
        )

    # -- properties ----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``"tiktoken"`` or ``"hf"``."""
        return self._backend.kind

    @property
    def vocab_size(self) -> int:
        """Size of the id space: every id decoded must be in ``[0, vocab_size)``."""
        return self._backend.vocab_size

    @property
    def eos_token_id(self) -> int:
        """End of text (199999, ``<|endoftext|>``, for Phi-4)."""
        return self._eos_id

    @property
    def end_token_id(self) -> int | None:
        """``<|end|>``, which closes each chat turn; None if the vocabulary lacks it."""
        return self._end_id

    @property
    def pad_token_id(self) -> int:
        """Padding id (the eos id unless the tokenizer config names a pad token)."""
        return self._pad_id

    @property
    def bos_token_id(self) -> int | None:
        """Beginning-of-text id if a bos token is configured (never added by ``encode``)."""
        return self._bos_id

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token strings and their ids (a copy)."""
        return dict(self._backend.special_tokens)

    @property
    def stop_token_ids(self) -> frozenset[int]:
        """Ids that end a generation: ``<|end|>`` (end of the assistant turn) and eos."""
        ids = {self._eos_id}
        if self._end_id is not None:
            ids.add(self._end_id)
        return frozenset(ids)

    @property
    def chat_template(self) -> str:
        """The jinja2 chat template in use (the checkpoint's, else :data:`PHI4_CHAT_TEMPLATE`)."""
        return self._chat_template_source if self._chat_template_source is not None else PHI4_CHAT_TEMPLATE

    def __repr__(self) -> str:
        return (
            f"Tokenizer(backend={self.backend!r}, vocab_size={self.vocab_size}, "
            f"eos_token={self.eos_token!r})"
        )

    # -- text <-> ids --------------------------------------------------------------------

    def encode(self, text: str, *, allow_special: bool = True) -> list[int]:
        """Token ids of ``text``; no bos/eos is added.

        Args:
            text: the text.
            allow_special: when True, special-token strings in the text (``"<|end|>"``)
                become their ids; when False they are encoded as ordinary text, as user
                content should be.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        return self._backend.encode(text, allow_special)

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of ``ids`` (a list, or anything with ``.tolist()`` like a tensor).

        Bytes that are not valid UTF-8 (e.g. a character cut off at the end) become U+FFFD.
        Ids without a token decode to ``""``.

        Args:
            ids: token ids, each in ``[0, vocab_size)``.
            skip_special: drop special tokens from the text.

        Raises:
            ValueError: an id is outside ``[0, vocab_size)``.
        """
        return self.decode_checked(self._check_ids(ids), skip_special)

    def decode_checked(self, id_list: list[int], skip_special: bool = False) -> str:
        """:meth:`decode` of a list of ids already known to be in range (streaming decoders
        check each id once, when it arrives, not every time it is decoded again)."""
        if skip_special:
            id_list = [i for i in id_list if i not in self._special_ids]
        return self._backend.decode(id_list)

    def check_id(self, token_id: int) -> int:
        """``token_id`` as an int, or ValueError when it is outside ``[0, vocab_size)``."""
        i = operator.index(token_id)
        if not 0 <= i < self.vocab_size:
            raise ValueError(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return i

    def _check_ids(self, ids: Iterable[int]) -> list[int]:
        tolist = getattr(ids, "tolist", None)
        values = tolist() if callable(tolist) else ids
        id_list = [operator.index(i) for i in values]
        if id_list and (min(id_list) < 0 or max(id_list) >= self.vocab_size):
            bad = next(i for i in id_list if not 0 <= i < self.vocab_size)
            raise ValueError(f"token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        return id_list

    def token_to_id(self, token: str) -> int:
        """Id of a single token (e.g. ``"<|end|>"`` -> 200020 for Phi-4).

        Raises:
            KeyError: the token is not in the vocabulary.
        """
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise KeyError(f"{token!r} is not a token of this tokenizer")
        return token_id

    # -- chat ------------------------------------------------------------------------------

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render a conversation to prompt text with the chat template.

        The template sees ``messages``, ``add_generation_prompt``, ``eos_token`` and
        ``bos_token`` (``""`` when none), and may call ``raise_exception(msg)``, as with
        transformers. The default Phi template accepts the roles system, user and assistant.

        Args:
            messages: ``[{"role": ..., "content": ...}, ...]``.
            add_generation_prompt: end with ``<|assistant|>`` so the model answers; when
                False the Phi template closes the conversation with eos instead.

        Raises:
            jinja2.TemplateError: the template rejects the messages (``raise_exception``)
                or is malformed.
        """
        if self._compiled_template is None:
            self._compiled_template = chat_environment().from_string(self.chat_template)
        return self._compiled_template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            eos_token=self.eos_token,
            bos_token=self.bos_token or "",
        )

    def chat_prompt(self, question: str, system: str | None = None) -> str:
        """Prompt text for one user question (and an optional system message)."""
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.append({"role": "user", "content": question})
        return self.apply_chat_template(messages, add_generation_prompt=True)

    # -- saving ----------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the tokenizer into ``folder`` (created if needed) for :func:`load_tokenizer`.

        The ``"hf"`` backend writes ``tokenizer.json`` and ``tokenizer_config.json`` (chat
        template, bos/eos/pad tokens, ``added_tokens_decoder``), a layout transformers'
        ``PreTrainedTokenizerFast`` reads too. The ``"tiktoken"`` backend writes only
        ``tokenizer_config.json``: the BPE file is not copied, and loading the folder
        rebuilds the Phi-4 tokenizer with this config. An existing ``chat_template.jinja``
        in the folder, which would take precedence when loading, is overwritten to match.

        Returns:
            the folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {}
        if isinstance(self._backend, HFBackend):
            self._backend.tokenizer.save(str(folder / "tokenizer.json"))
            config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config.update(
            chat_template=self.chat_template,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            pad_token=self.pad_token,
            clean_up_tokenization_spaces=False,
            added_tokens_decoder={
                str(token_id): {
                    "content": token,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": True,
                }
                for token, token_id in sorted(self.special_tokens.items(), key=lambda item: item[1])
            },
        )
        with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)
            f.write("\n")
        jinja_file = folder / "chat_template.jinja"
        if jinja_file.exists():
            jinja_file.write_text(self.chat_template, encoding="utf-8")
        return folder

