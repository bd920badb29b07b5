"""Tokenizers and chat formatting for Phi-4-mini / SambaY checkpoints: one :class:`Tokenizer`
over two back ends, one concern per file.

* ``tokenizer.py``: :class:`Tokenizer` (encode, decode, chat prompts, save).
* ``hf_backend.py``: the ``"hf"`` back end, a checkpoint's ``tokenizer.json``.
* ``tiktoken_backend.py``: the ``"tiktoken"`` back end, Phi-4-mini rebuilt offline from
  o200k_base; ``o200k.py``: where its BPE file is found (never downloaded) and how it is read.
* ``phi4.py``: Phi-4-mini's special tokens and chat template.
* ``chat_template.py``: the jinja2 sandbox chat templates render in (as transformers does).
* ``stream.py``: :class:`StreamDecoder`, ids to text deltas that never split a UTF-8 character.
* ``loading.py``: :func:`load_tokenizer` for a checkpoint folder, and its errors.

Typical use::

    tok = load_tokenizer(checkpoint_dir)          # or load_tokenizer() for Phi-4 via tiktoken
    ids = tok.encode(tok.chat_prompt("What is 7 * 6?"))
    stream = StreamDecoder(tok)
    for token_id in generated:                    # stop when token_id in tok.stop_token_ids
        print(stream.feed(token_id), end="")
    print(stream.flush())
"""

from .loading import MissingTokenizerFile, TokenizerFileError, load_tokenizer
from .o200k import BPE_ENV_VAR, O200K_BPE_URL, O200K_CACHE_NAME, O200K_PATTERN, O200K_SHA256, find_o200k_bpe
from .phi4 import PHI4_CHAT_TEMPLATE, PHI4_EOS_TOKEN, PHI4_SPECIAL_TOKENS, PHI4_VOCAB_SIZE
from .stream import StreamDecoder
from .tokenizer import Tokenizer

__all__ = [
    "BPE_ENV_VAR", "O200K_BPE_URL", "O200K_CACHE_NAME", "O200K_PATTERN", "O200K_SHA256", "PHI4_CHAT_TEMPLATE",
    "PHI4_EOS_TOKEN", "PHI4_SPECIAL_TOKENS", "PHI4_VOCAB_SIZE", "MissingTokenizerFile", "StreamDecoder",
    "Tokenizer", "TokenizerFileError", "find_o200k_bpe", "load_tokenizer",
]
