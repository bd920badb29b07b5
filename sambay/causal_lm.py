"""What both models of the package share: the call (``forward`` with a cache, padding and
``logits_to_keep``), the paged-cache contract (``run``), dtype/device and checkpoints.

:class:`~sambay.model.SambaYForCausalLM` and :class:`~sambay.phi4mini.Phi4MiniForCausalLM`
subclass :class:`CausalLM`; neither needs the other's file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from layers import backends
from layers.backends import Backends
from layers.linear import Linear

from .cache import CacheBatch, PagedCache, SequenceCache
from .checkpoint import load_pretrained, save_pretrained


@dataclass
class CausalLMOutput:
    """``logits`` (B, T or logits_to_keep, vocab) in the model dtype, and the cache passed in."""

    logits: torch.Tensor
    cache: SequenceCache | None


def resolve_padding(attention_mask: torch.Tensor | None, batch: int, T: int,
                    device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Turn an HF-style ``attention_mask`` (B, T; 1 = token, 0 = left pad) of a full forward into
    ``(start, pad_mask, positions)``: pad tokens per row (None without padding), a (B, T) mask of
    the real tokens (None when all are real) and the positions (T,). Only left padding."""
    positions = torch.arange(T, device=device)
    if attention_mask is None:
        return None, None, positions
    m = attention_mask.to(device=device, dtype=torch.bool)
    if m.shape != (batch, T):
        raise ValueError(f"attention_mask has shape {tuple(m.shape)}, expected (batch, seq_len) = {(batch, T)}")
    if bool((m[:, :-1] & ~m[:, 1:]).any()):
        raise ValueError("attention_mask must be left padding only: zeros then ones in every row")
    if not bool(m[:, -1].all()):
        raise ValueError("attention_mask has a row without any token")
    start = (~m).sum(1)
    if not bool(start.any()):
        return None, None, positions
    return start, positions[None] >= start[:, None], positions


class CausalLM(nn.Module):
    """What both models of the package share: the call, the paged-cache contract, dtype/device
    and checkpoints. A subclass sets ``config_class`` and implements ``_forward_full`` (a whole
    sequence, no cache), ``run`` (tokens through a paged cache) and ``make_cache``.

    ``backends``: the kernels this model runs on (:class:`layers.backends.Backends`; the
    environment's choice unless set, ``model.backends = Backends(attention="ref")``), active in
    the calling thread during :meth:`forward` and, through the engine, during each step."""

    config_class: type
    backends: Backends = backends.DEFAULT  # a class default: assigning sets this model's own

    def __init__(self, config, model: nn.Module, lm_head_bias: bool = False) -> None:
        """``model`` holds ``embed_tokens``, the layers and the final norm; the head is a
        :class:`~layers.linear.Linear`, tied to the embedding when the config says so. The weights
        are initialized (``reset_parameters``) unless built on the meta device to load into."""
        super().__init__()
        self.config = config
        self.model = model
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=lm_head_bias)
        if not self.lm_head.weight.is_meta:  # meta: a shape-only model, built to load weights into
            self.reset_parameters()
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def forward(
        self,
        input_ids: torch.Tensor,
        cache: SequenceCache | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int | None = None,
    ) -> CausalLMOutput:
        """Run ``input_ids`` (B, T) after whatever ``cache`` holds (appending to it).

        Without a cache this is a plain full-sequence forward; ``attention_mask`` (B, T) marks left
        padding (0) for prompts of different lengths, each row computing what its prompt alone
        computes. With a cache (:meth:`allocate_cache`) every row appends T tokens; one token after
        the first call is a decode step. ``logits_to_keep`` computes logits for the last positions only.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        with backends.activate(self.backends):
            if cache is not None:
                if attention_mask is not None:
                    raise ValueError("attention_mask (left padding) is for full forwards without a cache; rows of "
                                     "different lengths run through sambay.generate.Engine (per-row positions)")
                batch = cache.batch(B, T)
                logits = self.run(input_ids, cache.cache, batch, logits_to_keep)
                cache.advance(T)
                return CausalLMOutput(logits, cache)
            start, pad_mask, positions = resolve_padding(attention_mask, B, T, input_ids.device)
            return CausalLMOutput(self._forward_full(input_ids, positions, start, pad_mask, logits_to_keep), None)

    def allocate_cache(self, batch_size: int, max_seq_len: int, block_size: int = 16,
                       kv_cache_dtype: str | None = None) -> SequenceCache:
        """A cache for ``batch_size`` sequences of up to ``max_seq_len`` tokens (the simple cached path)."""
        if batch_size < 1 or max_seq_len < 1:
            raise ValueError(f"batch_size and max_seq_len must be >= 1, got {batch_size}, {max_seq_len}")
        blocks = 1 + batch_size * -(-max_seq_len // block_size)
        return SequenceCache(self.make_cache(blocks, block_size, batch_size, kv_cache_dtype=kv_cache_dtype),
                             batch_size, max_seq_len, self.uses_long_rope(max_seq_len))

    def make_cache(self, num_blocks: int, block_size: int, num_slots: int, device: torch.device | str | None = None,
                   kv_cache_dtype: str | None = None) -> PagedCache:
        """Block pools of ``num_blocks`` blocks of ``block_size`` tokens and ``num_slots`` per-slot
        states, on ``device`` (default: the model's; "meta" for sizes only); ``kv_cache_dtype``
        "fp8" stores the paged K/V in float8 e4m3 with per-(token, head) scales (None / "auto": the
        model's dtype)."""
        raise NotImplementedError

    def uses_long_rope(self, length: int) -> bool:
        """Whether a sequence with a budget of ``length`` positions uses LongRoPE's long factors."""
        return False

    def _forward_full(self, input_ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor | None,
                      pad_mask: torch.Tensor | None, logits_to_keep: int | None) -> torch.Tensor:
        raise NotImplementedError

    def run(self, input_ids: torch.Tensor, cache: PagedCache, batch: CacheBatch,
            logits_to_keep: int | None = None) -> torch.Tensor:
        """Tokens through a paged cache -> logits (B, T or logits_to_keep, V).

        Prefill (``batch.start`` set): input_ids (B, T) continue the rows' cached tokens. Decode
        (``batch.decode``): input_ids (B, 1), one token per row at its own position; static shapes
        and device tensors only, no host synchronization: the function a CUDA graph captures (and
        torch.compile compiles).
        """
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None, quantize: str | None = None) -> "CausalLM":
        """Load ``folder`` (config.json + safetensors, official layout). ``dtype`` defaults to the
        checkpoint's ``torch_dtype``; ``device`` to CPU; ``quantize="fp8"`` stores the projections
        and the lm_head in fp8 with per-row scales computed from the loaded weights."""
        return load_pretrained(cls, folder, dtype=dtype, device=device, quantize=quantize)

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and the weights as ``model.safetensors`` or shards + index."""
        save_pretrained(self, folder, max_shard_size=max_shard_size)
