"""Rotary position embedding as the dense Phi-4-mini uses it: partial rotary + LongRoPE.

* **Partial rotary.** Only the first ``rotary_dim = int(head_dim * partial_rotary_factor)`` dims of
  each query/key head are rotated (96 of 128 for Phi-4-mini); the rest pass through unchanged. The
  layout is "rotate half": dim ``i`` pairs with dim ``i + rotary_dim / 2`` (transformers' Phi3).
* **Frequencies.** ``inv_freq[i] = 1 / (ext[i] * rope_theta ** (2i / rotary_dim))`` for
  ``i < rotary_dim / 2``; the angle of position ``p`` is ``p * inv_freq[i]``. ``ext`` is LongRoPE's
  ``short_factor`` or ``long_factor`` list (all ones for plain RoPE).
* **Which list.** The long factors are used iff the sequence's *length budget* exceeds
  ``original_max_position_embeddings``: for a generation request, its prompt + ``max_new_tokens``
  (decided once per request, applied per row, so a row's numbers never depend on its batch); for a
  full forward, its length T (pad slots included), which is what transformers picks at that length
  (``max(position_ids) + 1``). transformers' ``generate`` instead switches lists when the running
  length crosses ``original_max_position_embeddings`` (recomputing its cache at that step); recent
  vLLM fixes the choice for the whole server at start-up (``max_model_len >
  original_max_position_embeddings``), and older vLLM chose per batch (any position past it).
* **Attention factor** (LongRoPE's magnitude scaling): cos and sin are multiplied by
  ``sqrt(1 + ln(factor) / ln(original_max_position_embeddings))`` where ``factor`` is the config's
  ``factor`` if given, else ``max_position_embeddings / original_max_position_embeddings``; it is 1
  when ``factor <= 1``, and an explicit ``attention_factor`` replaces the formula. The same for both
  lists; it scales q and k, so the attention logits by its square.

The arithmetic follows transformers (``_compute_longrope_parameters`` and ``Phi3RotaryEmbedding``)
step for step so that fp32 results agree bit for bit: angles in fp32, cos/sin cast to the model
dtype before they multiply q and k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import backends
from .attention import paged_store


@dataclass(frozen=True)
class RopeParams:
    """RoPE settings resolved from a config (``long_factor`` None: plain RoPE, no LongRoPE)."""

    rotary_dim: int
    theta: float
    short_factor: tuple[float, ...] | None = None
    long_factor: tuple[float, ...] | None = None
    original_max_position_embeddings: int | None = None
    attention_factor: float = 1.0


def longrope_attention_factor(max_position_embeddings: int, original_max_position_embeddings: int,
                              factor: float | None = None, attention_factor: float | None = None) -> float:
    """LongRoPE's cos/sin scale, as transformers computes it (see the module docstring)."""
    if attention_factor is not None:
        return float(attention_factor)
    if factor is None:
        factor = max_position_embeddings / original_max_position_embeddings
    if factor <= 1.0:
        return 1.0
    return math.sqrt(1 + math.log(factor) / math.log(original_max_position_embeddings))


def inverse_frequencies(rotary_dim: int, theta: float, ext_factors: tuple[float, ...] | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """(rotary_dim / 2,) fp32: ``1 / (ext * theta ** (2i / rotary_dim))``."""
    exponent = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float() / rotary_dim
    if ext_factors is None:
        return 1.0 / (theta**exponent)
    return 1.0 / (torch.tensor(ext_factors, dtype=torch.float32, device=device) * theta**exponent)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``rotary_dim`` dims of every head. x (B, T, H, D); cos, sin (B or 1, T, rotary_dim)."""
    r = cos.shape[-1]
    cos, sin = cos[:, :, None], sin[:, :, None]  # broadcast over heads
    x_rot, x_pass = x[..., :r], x[..., r:]
    x1, x2 = x_rot[..., : r // 2], x_rot[..., r // 2 :]
    rotated = torch.cat((-x2, x1), dim=-1)
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


def rotary_store_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_pool: torch.Tensor, v_pool: torch.Tensor, slots: torch.Tensor,
                     k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """One decode token per row: rotate q (B, 1, H, D) and k (B, 1, G, D) with cos, sin (B or 1, 1,
    rotary_dim), write the rotated k and v at flat ``slots`` (B,) of the pools (num_blocks,
    block_size, G, D) at flat slots block * block_size + offset (see
    :func:`layers.attention.paged_store`, which also quantizes into float8 pools), return the rotated q.
    A static (B, S, G, D) cache is a pool of B blocks of S slots: row b's slot at position p is b * S + p."""
    paged_store(apply_rotary(k, cos, sin), v, k_pool, v_pool, slots, k_scale, v_scale)
    return apply_rotary(q, cos, sin)


def rotary_store(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 k_pool: torch.Tensor, v_pool: torch.Tensor, slots: torch.Tensor,
                 k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`rotary_store_ref`; one Triton kernel on CUDA (unless the attention backend is ``ref``)."""
    if q.is_cuda and backends.attention_backend(q.device) != "ref" and not backends.needs_autograd(q, k, v):
        from .rope_triton import rotary_store_triton

        backends.announce("rope + cache write", "triton")
        return rotary_store_triton(q, k, v, cos, sin, k_pool, v_pool, slots, k_scale, v_scale)
    return rotary_store_ref(q, k, v, cos, sin, k_pool, v_pool, slots, k_scale, v_scale)


class RotaryEmbedding(nn.Module):
    """cos/sin for given positions, with the short or long LongRoPE factors (see the module docstring).

    The frequency tables are non-persistent fp32 buffers: they are not in checkpoints, and
    :meth:`init_buffers` rebuilds them (a model built on the meta device calls it after loading).
    They are rebuilt after every ``.to()`` too, so a dtype cast of the model never rounds them.
    """

    def __init__(self, params: RopeParams) -> None:
        super().__init__()
        self.params = params
        self.register_buffer("short_inv_freq", torch.empty(0), persistent=False)
        self.register_buffer("long_inv_freq", torch.empty(0), persistent=False)
        self.init_buffers()

    @torch.no_grad()
    def init_buffers(self, device: torch.device | str | None = None) -> None:
        device = self.short_inv_freq.device if device is None else device
        p = self.params
        self.short_inv_freq = inverse_frequencies(p.rotary_dim, p.theta, p.short_factor, device)
        long = p.long_factor if p.long_factor is not None else p.short_factor
        self.long_inv_freq = inverse_frequencies(p.rotary_dim, p.theta, long, device)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        super()._apply(fn, recurse)
        self.init_buffers()  # on the new device, in fp32, whatever fn did to the dtype
        return self

    def uses_long_factors(self, length: int) -> bool:
        """True iff a sequence of ``length`` positions (a request's prompt + max_new_tokens, or a
        full forward's T) selects the long factors."""
        p = self.params
        return p.long_factor is not None and length > p.original_max_position_embeddings

    def forward(self, positions: torch.Tensor, long: bool | torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B or 1, T) -> cos, sin (B or 1, T, rotary_dim) in ``dtype``; ``long`` picks the
        long factors for all rows (a bool) or per row (a (B,) bool tensor)."""
        if isinstance(long, torch.Tensor):
            inv_freq = torch.where(long[:, None], self.long_inv_freq, self.short_inv_freq)[:, None]  # (B, 1, r/2)
        else:
            inv_freq = self.long_inv_freq if long else self.short_inv_freq
        freqs = positions[..., None].float() * inv_freq  # (B|1, T, rotary_dim / 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        a = self.params.attention_factor
        return (emb.cos() * a).to(dtype), (emb.sin() * a).to(dtype)
