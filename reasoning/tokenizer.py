"""Tokenizer and chat formatting for Phi-4-mini / SambaY checkpoints.

One :class:`Tokenizer` interface over two backends:

* ``"hf"``: a checkpoint folder carrying ``tokenizer.json`` (loaded with the light
  ``tokenizers`` library, not ``transformers``), plus the optional
  ``tokenizer_config.json`` whose ``chat_template``, ``eos_token``, ``bos_token`` and
  ``pad_token`` are honoured.
* ``"tiktoken"``: the Phi-4-mini tokenizer rebuilt offline from tiktoken's o200k_base
  BPE ranks, the o200k split pattern and the Phi-4 special tokens at their official ids.
  Nothing is ever downloaded: the BPE file must already be on disk (see
  :func:`find_o200k_bpe`).

Chat prompts are rendered with jinja2 in a sandbox, the way ``transformers`` renders
``chat_template``; without a template the Phi format is used::

    <|system|>{system}<|end|><|user|>{question}<|end|><|assistant|>

:class:`StreamDecoder` turns a stream of generated token ids into text deltas that never
split a UTF-8 character.

Typical use::

    tok = load_tokenizer(checkpoint_dir)          # or load_tokenizer() for Phi-4 via tiktoken
    ids = tok.encode(tok.chat_prompt("What is 7 * 6?"))
    stream = StreamDecoder(tok)
    for token_id in generated:                    # stop when token_id in tok.stop_token_ids
        print(stream.feed(token_id), end="")
    print(stream.flush())
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import operator
import os
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

import jinja2
import jinja2.ext
import jinja2.sandbox
import tiktoken
import tokenizers

__all__ = [
    "BPE_ENV_VAR",
    "O200K_BPE_URL",
    "O200K_CACHE_NAME",
    "O200K_PATTERN",
    "O200K_SHA256",
    "PHI4_CHAT_TEMPLATE",
    "PHI4_SPECIAL_TOKENS",
    "PHI4_VOCAB_SIZE",
    "StreamDecoder",
    "Tokenizer",
    "find_o200k_bpe",
    "load_tokenizer",
]

# ----------------------------------------------------------------------------------------
# Phi-4-mini constants
# ----------------------------------------------------------------------------------------

# Special tokens of Phi-4-mini at their official ids. Written down from memory of the
# official tokenizer.json ("added_tokens") of microsoft/Phi-4-mini-instruct /
# Phi-4-mini-flash-reasoning, not copied from a file: no official file is available
# offline here. 199999 and 200018 agree with tiktoken's own o200k_base definition
# (<|endoftext|>, <|endofprompt|>), which the tests check.
PHI4_SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 199999,
    "<|endofprompt|>": 200018,
    "<|assistant|>": 200019,
    "<|end|>": 200020,
    "<|user|>": 200021,
    "<|system|>": 200022,
    "<|tool|>": 200023,
    "<|/tool|>": 200024,
    "<|tool_call|>": 200025,
    "<|/tool_call|>": 200026,
    "<|tool_response|>": 200027,
    "<|tag|>": 200028,
}

# The model's embedding is padded to 200064 rows. Ids in that range with no token (199998,
# 200000-200017, 200029-200063) decode to "" so that sampling one never crashes a stream.
PHI4_VOCAB_SIZE = 200064

PHI4_EOS_TOKEN = "<|endoftext|>"
PHI4_END_TOKEN = "<|end|>"  # closes every chat turn; generation stops on it
# Phi-4-mini's tokenizer_config.json uses <|endoftext|> as bos and pad as well (from
# memory); the Phi chat template never emits a bos token.
PHI4_BOS_TOKEN = "<|endoftext|>"
PHI4_PAD_TOKEN = "<|endoftext|>"

# Phi chat format: one "<|role|>content<|end|>" block per message (a system message only
# when given), then "<|assistant|>" to prompt a reply, or eos to close a full conversation.
PHI4_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unsupported chat role: ' + message['role'] "
    "+ ' (expected system, user or assistant)') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)

# ----------------------------------------------------------------------------------------
# o200k_base BPE file
# ----------------------------------------------------------------------------------------

O200K_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
# The hash tiktoken itself checks for this file.
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# tiktoken caches a download under the sha1 of its URL.
O200K_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"
BPE_ENV_VAR = "SAMBAY_O200K_BPE"

# o200k_base's pre-tokenization regex, written down here because tiktoken only builds it
# inside tiktoken_ext.openai_public.o200k_base(), which would download the BPE file. The
# tests check it equals tiktoken's.
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)


def _tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken caches downloads in, or None when its caching is disabled."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            value = os.environ[var]
            return Path(value) if value else None  # tiktoken: "" disables the cache
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def find_o200k_bpe(bpe_file: str | os.PathLike[str] | None = None) -> Path:
    """Locate tiktoken's o200k_base BPE file on disk, without downloading anything.

    Looks, in order, at ``bpe_file``, the environment variable ``SAMBAY_O200K_BPE``, and
    tiktoken's cache (``$TIKTOKEN_CACHE_DIR``, else ``$DATA_GYM_CACHE_DIR``, else
    ``<tmp>/data-gym-cache``) for a file named ``fb374d419588a4632f3f557e76b4b70aebbca790``.

    Raises:
        FileNotFoundError: an explicit ``bpe_file`` or ``$SAMBAY_O200K_BPE`` names a missing
            file, or the file is nowhere; the message says how to provide it.
    """
    if bpe_file is not None:
        path = Path(bpe_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"o200k_base BPE file bpe_file={str(bpe_file)!r} is not an existing file")
        return path
    env_value = os.environ.get(BPE_ENV_VAR)
    if env_value:
        path = Path(env_value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"${BPE_ENV_VAR}={env_value!r} does not name an existing o200k_base BPE file"
            )
        return path
    cache_dir = _tiktoken_cache_dir()
    if cache_dir is not None and (cache_dir / O200K_CACHE_NAME).is_file():
        return cache_dir / O200K_CACHE_NAME
    looked = str(cache_dir) if cache_dir is not None else "nowhere: $TIKTOKEN_CACHE_DIR is empty, caching is off"
    raise FileNotFoundError(
        "Cannot find tiktoken's o200k_base BPE file, which the Phi-4 tokenizer is built from "
        "(this package never downloads it). Provide it in one of these ways:\n"
        "  1. pass bpe_file='/path/to/o200k_base.tiktoken' to load_tokenizer() or Tokenizer.phi4();\n"
        f"  2. set the environment variable {BPE_ENV_VAR}=/path/to/o200k_base.tiktoken;\n"
        f"  3. put it in tiktoken's cache folder under the name {O200K_CACHE_NAME} "
        f"(the folder is $TIKTOKEN_CACHE_DIR, else $DATA_GYM_CACHE_DIR, else <tmp>/data-gym-cache; "
        f"looked in {looked}).\n"
        f"tiktoken downloads this file from {O200K_BPE_URL} (sha256 {O200K_SHA256}). "
        "Alternatively, load a checkpoint folder that carries its own tokenizer.json."
    )


def _read_o200k_ranks(path: Path) -> dict[bytes, int]:
    """Parse an o200k_base BPE file (``base64-token rank`` per line), checking its hash."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != O200K_SHA256:
        raise ValueError(
            f"{path} is not tiktoken's o200k_base BPE file: sha256 {digest}, expected {O200K_SHA256}"
        )
    # Parsed here rather than with tiktoken.load.load_tiktoken_bpe, which copies any file it
    # reads into tiktoken's cache folder as a side effect.
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


# ----------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------


class _Backend(Protocol):
    """What :class:`Tokenizer` needs from a tokenization library."""

    kind: str
    vocab_size: int  # ids are in [0, vocab_size); some may have no token
    special_tokens: dict[str, int]

    def encode(self, text: str, allow_special: bool) -> list[int]: ...

    def decode(self, ids: list[int]) -> str:
        """Text of in-range ids; ids without a token contribute ""; bad UTF-8 -> U+FFFD."""
        ...

    def token_to_id(self, token: str) -> int | None: ...


class _TiktokenBackend:
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
def _phi4_backend_from_file(path: str) -> _TiktokenBackend:
    """The Phi-4 tiktoken backend for one BPE file, built once (it takes ~0.5 s)."""
    return _TiktokenBackend(_read_o200k_ranks(Path(path)), PHI4_SPECIAL_TOKENS, PHI4_VOCAB_SIZE)


def _phi4_backend(bpe_file: str | os.PathLike[str] | None) -> _TiktokenBackend:
    return _phi4_backend_from_file(str(find_o200k_bpe(bpe_file).resolve()))


class _HFBackend:
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


# ----------------------------------------------------------------------------------------
# Chat templates
# ----------------------------------------------------------------------------------------


def _raise_exception(message: str) -> NoReturn:
    """``raise_exception`` helper available to chat templates, as in transformers."""
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' ``tojson`` filter: plain JSON, not HTML-escaped like jinja2's own."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    """``strftime_now`` helper available to chat templates, as in transformers."""
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=1)
def _chat_environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    """The sandboxed jinja2 environment chat templates are rendered in (transformers' setup)."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


# ----------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------


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
        backend: _Backend,
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
            _phi4_backend(bpe_file),
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
            _HFBackend(tokenizer, vocab_size),
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
        id_list = self._check_ids(ids)
        if skip_special:
            id_list = [i for i in id_list if i not in self._special_ids]
        return self._backend.decode(id_list)

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
            self._compiled_template = _chat_environment().from_string(self.chat_template)
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
        if isinstance(self._backend, _HFBackend):
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


# ----------------------------------------------------------------------------------------
# Streaming
# ----------------------------------------------------------------------------------------

_REPLACEMENT_CHAR = "\ufffd"


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
        return self._tokenizer.decode(ids, skip_special=self._skip_special)

    def feed(self, token_id: int) -> str:
        """Add one token id; return the text it completes (possibly ``""``)."""
        ids = [*self._ids, operator.index(token_id)]
        text = self._decode(ids)  # validates the id before it is kept
        self._ids = ids
        if text.endswith(_REPLACEMENT_CHAR) or len(text) <= len(self._prefix_text):
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


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------


def _token_content(value: Any) -> str | None:
    """A token from tokenizer_config.json: a string or an AddedToken dict ``{"content": ...}``."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _read_chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    """The folder's chat template: ``chat_template.jinja`` (as transformers prefers), else
    ``tokenizer_config.json``'s ``chat_template`` (a string, or a list of named templates of
    which "default" is used)."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template") for entry in template if isinstance(entry, Mapping)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def load_tokenizer(
    path: str | os.PathLike[str] | None = None, *, bpe_file: str | os.PathLike[str] | None = None
) -> Tokenizer:
    """Load the tokenizer for a checkpoint folder.

    * a folder with ``tokenizer.json`` -> the ``"hf"`` backend, configured by the folder's
      ``tokenizer_config.json`` / ``chat_template.jinja`` when present; its id space is
      padded to ``vocab_size`` from the folder's ``config.json`` when that is larger;
    * a folder without ``tokenizer.json``, or ``path=None`` -> the Phi-4 tokenizer via
      tiktoken (:meth:`Tokenizer.phi4`, using ``bpe_file`` or the lookup of
      :func:`find_o200k_bpe`), still honouring the folder's ``tokenizer_config.json``
      (chat template, bos/eos/pad tokens).

    Raises:
        FileNotFoundError: ``path`` does not exist, or the o200k_base BPE file is needed
            and cannot be found.
        NotADirectoryError: ``path`` is a file.
    """
    if path is None:
        return Tokenizer.phi4(bpe_file)
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"tokenizer folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(
            f"expected a checkpoint folder with tokenizer files, got the file {str(folder)!r}"
        )

    config = _read_json(folder / "tokenizer_config.json")
    chat_template = _read_chat_template(folder, config)
    eos_token = _token_content(config.get("eos_token"))
    bos_token = _token_content(config.get("bos_token"))
    pad_token = _token_content(config.get("pad_token"))

    if not (folder / "tokenizer.json").is_file():
        return Tokenizer(
            _phi4_backend(bpe_file),
            chat_template=chat_template,
            eos_token=eos_token or PHI4_EOS_TOKEN,
            bos_token=bos_token or PHI4_BOS_TOKEN,
            pad_token=pad_token or PHI4_PAD_TOKEN,
        )

    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    if eos_token is None:
        if hf.token_to_id(PHI4_EOS_TOKEN) is None:
            raise ValueError(
                f"{folder}: tokenizer_config.json names no eos_token "
                f"and the vocabulary has no {PHI4_EOS_TOKEN}"
            )
        eos_token = PHI4_EOS_TOKEN
    model_vocab = _read_json(folder / "config.json").get("vocab_size")
    return Tokenizer.from_hf(
        hf,
        chat_template=chat_template,
        eos_token=eos_token,
        bos_token=bos_token,
        pad_token=pad_token,
        vocab_size=model_vocab if isinstance(model_vocab, int) else None,
    )
