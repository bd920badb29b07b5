"""Loading the tokenizer of a checkpoint folder (``tokenizer.json``, ``tokenizer_config.json``,
``chat_template.jinja``), or the Phi-4 tokenizer from o200k_base."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tokenizers

from .phi4 import PHI4_BOS_TOKEN, PHI4_EOS_TOKEN, PHI4_PAD_TOKEN
from .tiktoken_backend import phi4_backend
from .tokenizer import Tokenizer


class TokenizerFileError(ValueError):
    """A tokenizer file of a checkpoint folder cannot be used; the message names the file."""


class MissingTokenizerFile(TokenizerFileError, FileNotFoundError):
    """A folder has no ``tokenizer.json`` and the Phi-4 tokenizer it then falls back to cannot be
    built (the o200k_base BPE file is nowhere)."""


def _token_content(value: Any) -> str | None:
    """A token from tokenizer_config.json: a string or an AddedToken dict ``{"content": ...}``."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file's object ({} when the file is absent or holds no object)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerFileError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}


def _read_tokenizer_json(path: Path) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception
        try:  # say what is wrong: not JSON at all, or JSON that is not a tokenizer
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as bad_json:
            raise TokenizerFileError(f"{path} is not valid JSON: {bad_json}") from e
        raise TokenizerFileError(f"{path} is not a tokenizer the tokenizers library reads: {e}") from e


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
        FileNotFoundError: ``path`` does not exist, or (``path=None``) the o200k_base BPE file
            cannot be found.
        MissingTokenizerFile: the folder has no ``tokenizer.json`` and the o200k_base BPE
            file cannot be found.
        TokenizerFileError: ``tokenizer.json``, ``tokenizer_config.json`` or ``config.json``
            is not valid JSON, or ``tokenizer.json`` is not a tokenizer.
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
        try:
            backend = phi4_backend(bpe_file)
        except FileNotFoundError as e:
            raise MissingTokenizerFile(
                f"{folder / 'tokenizer.json'} is missing. Without it the folder's tokenizer is taken to be "
                f"Phi-4's, rebuilt from tiktoken's o200k_base, and that needs the BPE file: {e}"
            ) from e
        return Tokenizer(
            backend,
            chat_template=chat_template,
            eos_token=eos_token or PHI4_EOS_TOKEN,
            bos_token=bos_token or PHI4_BOS_TOKEN,
            pad_token=pad_token or PHI4_PAD_TOKEN,
        )

    hf = _read_tokenizer_json(folder / "tokenizer.json")
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
