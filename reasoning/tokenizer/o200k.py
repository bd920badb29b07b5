"""tiktoken's o200k_base BPE file, which the Phi-4 tokenizer is built from: where it is found on
disk (never downloaded), how it is checked and read, and its pre-tokenization pattern."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path

from layers import environment

O200K_BPE_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
# The hash tiktoken itself checks for this file.
O200K_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
# tiktoken caches a download under the sha1 of its URL.
O200K_CACHE_NAME = "fb374d419588a4632f3f557e76b4b70aebbca790"
BPE_ENV_VAR = "SAMBAY_O200K_BPE"  # see layers.environment

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
    env_value = environment.read(BPE_ENV_VAR)
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


def read_o200k_ranks(path: Path) -> dict[bytes, int]:
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

