"""What both models of the package share: the call (``forward`` with a cache, padding and
``logits_to_keep``), the one-token decode-step contract, dtype/device and checkpoints.

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

from .cache import CacheBase
from .checkpoint import load_pretrained, save_pretrained


@dataclass
class CausalLMOutput:
    """``logits`` (B, T or logits_to_keep, vocab) in the model dtype, and the cache passed in."""

    logits: torch.Tensor
    cache: CacheBase | None


def resolve_padding(
    attention_mask: torch.Tensor | None, cache: CacheBase | None, batch: int, T: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
    """Turn an HF-style ``attention_mask`` (B, cached + T; 1 = token, 0 = left pad) into
    ``(start, pad_mask, positions)``: pad tokens per row (None without padding), a (B, T) mask of
    the new real tokens (None when all are real) and the new tokens' positions (T,).

    Only left padding is supported, given with the first tokens of the rows; the cache
    remembers it, so later calls may omit the mask (or must repeat it unchanged)."""
    past = cache.length if cache is not None else 0
    positions = torch.arange(past, past + T, device=device)
    start = cache.start if cache is not None and cache.max_start > 0 else None
    if attention_mask is not None:
        m = attention_mask.to(device=device, dtype=torch.bool)
        if m.shape != (batch, past + T):
            raise ValueError(f"attention_mask has shape {tuple(m.shape)}, expected (batch, cached + new) = "
                             f"{(batch, past + T)}")
        if bool((m[:, :-1] & ~m[:, 1:]).any()):
            raise ValueError("attention_mask must be left padding only: zeros then ones in every row")
        if not bool(m[:, -1].all()):
            raise ValueError("attention_mask has a row without any token")
        new_start = (~m).sum(1)
        if past == 0:
            if cache is not None:
                cache.set_padding(new_start)
            start = new_start if bool(new_start.any()) else None
        elif not torch.equal(new_start, start if start is not None else torch.zeros_like(new_start)):
            raise ValueError("attention_mask disagrees with the padding recorded in the cache")
    if start is None or past >= int(start.max()):
        return start, None, positions
    return start, positions[None] >= start[:, None], positions


class CausalLM(nn.Module):
    """What both models of the package share: the call, the decode-step contract, dtype/device
    and checkpoints. A subclass sets ``config_class`` and implements ``_forward`` (T new tokens,
    host-side positions) and ``decode_step`` (one token, device-side positions).

    ``backends``: the kernels this model runs on (:class:`layers.backends.Backends`; the
    environment's choice unless set, ``model.backends = Backends(attention="ref")``), active in
    the calling thread during :meth:`forward` and, through the engine, during each decode step."""

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
        cache: CacheBase | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_to_keep: int | None = None,
    ) -> CausalLMOutput:
        """Run ``input_ids`` (B, T) after whatever ``cache`` holds (appending to it).

        Without a cache this is a plain full-sequence forward. ``attention_mask`` (B, cached + T)
        marks left padding (0) for batches of prompts of different lengths; each row computes
        what its prompt alone computes. ``logits_to_keep`` computes logits for the last
        positions only (generation needs one). One token with a cache and no mask goes through
        :meth:`decode_step`.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        with backends.activate(self.backends):
            if cache is not None:
                cache.check_room(B, T)
                if T == 1 and attention_mask is None:
                    logits = self.decode_step(input_ids, cache)
                    cache.length += 1
                    return CausalLMOutput(logits, cache)
            start, pad_mask, positions = resolve_padding(attention_mask, cache, B, T, input_ids.device)
            logits = self._forward(input_ids, positions, start, pad_mask, cache, logits_to_keep)
        if cache is not None:
            cache.advance(T)
        return CausalLMOutput(logits, cache)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor | None,
                 pad_mask: torch.Tensor | None, cache: CacheBase | None, logits_to_keep: int | None) -> torch.Tensor:
        raise NotImplementedError

    def decode_step(self, input_ids: torch.Tensor, cache: CacheBase) -> torch.Tensor:
        """One token per row (B, 1) through ``cache`` -> logits (B, 1, V).

        Static shapes and device-side positions only, no host bookkeeping: this is the function
        a CUDA graph captures (and torch.compile compiles). It advances ``cache.seqlen``; the
        caller checks room and advances ``cache.length``.
        """
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None) -> "CausalLM":
        """Load ``folder`` (config.json + safetensors, official layout). ``dtype`` defaults to the
        checkpoint's ``torch_dtype``; ``device`` to CPU."""
        return load_pretrained(cls, folder, dtype=dtype, device=device)

    def save_pretrained(self, folder: str | os.PathLike, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and the weights as ``model.safetensors`` or shards + index."""
        save_pretrained(self, folder, max_shard_size=max_shard_size)
