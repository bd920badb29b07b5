"""The small tokenizer of the built-in model: a byte-level BPE trained on curriculum text.

Same special tokens and chat template as Phi-4-mini (:data:`PHI4_SPECIAL_TOKENS`, at ids
``0..11`` instead of ``199999..``), but a few hundred tokens instead of 200064, so the model's
embedding stays tiny. Two rules make arithmetic learnable:

* every digit is its own token: digits are split off before BPE sees the text, so no merge
  can join a digit with anything (``"347"`` is ``3 4 7``, ``"=56"`` is ``= 5 6``);
* byte-level: any text encodes (no unknown token), even characters the curriculum never uses;
* ``<think>`` and ``</think>``, which wrap every worked solution, are one token each (added,
  not special: decoding keeps them, as the text a reasoning parser splits).

Merges are learnt from :func:`reasoning.curriculum.generate_problems` text only, so words
of the curriculum (``" carry"``, ``" borrow"``, ``" answer"``...) become single tokens.
Training is deterministic: the same arguments give the same ``tokenizer.json``.

    tok = build_small_tokenizer()          # a reasoning.tokenizer.Tokenizer ("hf" backend)
    tok.save("folder")                     # tokenizer.json + tokenizer_config.json
"""

from __future__ import annotations

import tokenizers
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, trainers

from .curriculum import THINK_CLOSE, THINK_OPEN, generate_problems
from .tokenizer import PHI4_CHAT_TEMPLATE, PHI4_EOS_TOKEN, PHI4_SPECIAL_TOKENS, Tokenizer

__all__ = ["SMALL_VOCAB_SIZE", "build_small_tokenizer", "train_small_bpe"]

SMALL_VOCAB_SIZE = 384
"""Tokens of the built-in model's tokenizer: 12 special + 256 bytes + 114 merges + ``<think>`` + ``</think>``."""

_TAGS = (THINK_OPEN, THINK_CLOSE)


def train_small_bpe(vocab_size: int = SMALL_VOCAB_SIZE, n_problems: int = 4000, seed: int = 0) -> tokenizers.Tokenizer:
    """The raw ``tokenizers.Tokenizer``, trained on the chat text of ``n_problems`` training
    problems drawn with ``seed``. Ids: the Phi special tokens first (``<|endoftext|>`` = 0, in
    :data:`PHI4_SPECIAL_TOKENS` order), then the 256 byte symbols, then the merges, then
    ``<think>`` and ``</think>`` (the last two ids; no merge is spent on them)."""
    n_base = len(PHI4_SPECIAL_TOKENS) + 256 + len(_TAGS)
    if vocab_size < n_base:
        raise ValueError(f"vocab_size must be at least {n_base} (special tokens + bytes), got {vocab_size}")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),  # one token per digit
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(_TAGS), special_tokens=list(PHI4_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    texts = [p.chat_text().replace(THINK_OPEN, "").replace(THINK_CLOSE, "")
             for p in generate_problems(n_problems, seed=seed, unique=False)]
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in _TAGS])
    return tok


def build_small_tokenizer(vocab_size: int = SMALL_VOCAB_SIZE, n_problems: int = 4000, seed: int = 0) -> Tokenizer:
    """:func:`train_small_bpe` wrapped as a :class:`~reasoning.tokenizer.Tokenizer` with the Phi
    chat template and ``<|endoftext|>`` as eos, bos and pad (as Phi-4-mini has them)."""
    return Tokenizer.from_hf(train_small_bpe(vocab_size, n_problems, seed), chat_template=PHI4_CHAT_TEMPLATE,
                             eos_token=PHI4_EOS_TOKEN, bos_token=PHI4_EOS_TOKEN, pad_token=PHI4_EOS_TOKEN)
