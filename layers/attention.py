"""Attention: one masked-softmax kernel (``attend``) and SambaY's differential attention.

Every attention in the package (sliding window, global, cross over a shared cache, one-token
decode, and the dense baseline's GQA) is ``attend(q, k, v, q_pos, k_pos, start, window)``:
queries at absolute positions ``q_pos`` attend to keys at ``k_pos`` (slots with a negative
position are empty), causally, within ``window`` keys when given, skipping each row's left
padding (``start[b]`` = number of pad tokens of row b). Scale is ``q.shape[-1] ** -0.5``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .norm import RMSNorm


def attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, start: torch.Tensor | None = None, window: int | None = None
) -> torch.Tensor:
    """Boolean mask (B or 1, T, S): True where query t may read key s.

    A query sees keys with ``q_pos - window < k_pos <= q_pos``. A padding query (q_pos < start)
    sees only itself, so no softmax row is empty; its output is never used.
    """
    qp, kp = q_pos[:, None], k_pos[None, :]
    m = (kp <= qp) & (kp >= 0)
    if window is not None:
        m = m & (qp - kp < window)
    m = m[None]
    if start is not None:
        m = (m & (kp >= start[:, None, None])) | (kp == qp)[None]
    return m


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    start: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Reference: q (B, T, Hq, D), k (B, S, Hk, D), v (B, S, Hk, Dv) -> (B, T, Hq, Dv), fp32 math.

    GQA: query head i reads key/value head ``i // (Hq // Hk)``.
    """
    B, T, Hq, D = q.shape
    Hk = k.shape[2]
    qf = q.float().reshape(B, T, Hk, Hq // Hk, D)
    scores = torch.einsum("bthrd,bshd->bhrts", qf, k.float()) * D**-0.5
    mask = attention_mask(q_pos, k_pos, start, window)  # (B|1, T, S)
    scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    out = torch.einsum("bhrts,bshd->bthrd", scores.softmax(-1), v.float())
    return out.reshape(B, T, Hq, v.shape[-1]).to(q.dtype)


attend = attention_ref


def lambda_init_fn(layer_idx: int) -> float:
    """Differential attention's per-depth initial lambda."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_idx)


class DiffAttnCore(nn.Module):
    """The differential part of an attention layer (``attn.inner_cross_attn`` in checkpoints).

    Heads split into even (stripe 1) and odd (stripe 2) query and key heads; both stripes read
    the same values with each pair of adjacent KV heads concatenated to one 2D-wide head::

        a_i = softmax(q_i k_i^T) [v_even | v_odd]            (B, T, H/2, 2D)
        o   = RMSNorm(a_1 - lambda a_2) * (1 - lambda_init)
    """

    def __init__(self, head_dim: int, layer_idx: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambda_init = lambda_init_fn(layer_idx)
        self.lambda_q1 = nn.Parameter(torch.empty(head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(head_dim))
        self.subln = RMSNorm(2 * head_dim, eps=eps)

    def lambda_full(self) -> torch.Tensor:
        l1 = torch.exp(torch.sum(self.lambda_q1.float() * self.lambda_k1.float()))
        l2 = torch.exp(torch.sum(self.lambda_q2.float() * self.lambda_k2.float()))
        return l1 - l2 + self.lambda_init

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        start: torch.Tensor | None = None,
        window: int | None = None,
    ) -> torch.Tensor:
        """q (B, T, H, D), k and v (B, S, G, D) -> (B, T, H * D)."""
        B, T, H, D = q.shape
        S, G = k.shape[1], k.shape[2]
        v2 = v.reshape(B, S, G // 2, 2 * D)  # adjacent heads side by side: [v_even | v_odd]
        a1 = attend(q[:, :, 0::2], k[:, :, 0::2], v2, q_pos, k_pos, start, window)  # (B, T, H/2, 2D)
        a2 = attend(q[:, :, 1::2], k[:, :, 1::2], v2, q_pos, k_pos, start, window)
        o = self.subln(a1 - self.lambda_full().to(a1.dtype) * a2) * (1 - self.lambda_init)
        return o.reshape(B, T, H * D)


class DiffAttention(nn.Module):
    """A SambaY attention layer: ``Wqkv`` projection, differential core, ``out_proj``.

    Self-attention layers project q, k, v; cross-attention layers (``cross=True``) project only
    q and read the K/V of the full-attention layer. Caching is the caller's business: this
    module maps hidden states to q/k/v and attention outputs back to hidden states.
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, layer_idx: int,
                 cross: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.cross = cross
        out = num_heads if cross else num_heads + 2 * num_kv_heads
        self.Wqkv = nn.Linear(dim, out * self.head_dim, bias=True)
        self.inner_cross_attn = DiffAttnCore(self.head_dim, layer_idx, eps)
        self.out_proj = nn.Linear(num_heads * self.head_dim, dim, bias=True)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, T, d) -> q (B, T, H, D) and, for self-attention, k, v (B, T, G, D)."""
        B, T, _ = x.shape
        qkv = self.Wqkv(x)
        if self.cross:
            return qkv.view(B, T, self.num_heads, self.head_dim), None, None
        q, k, v = qkv.split([self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                             self.num_kv_heads * self.head_dim], dim=-1)
        return (q.view(B, T, self.num_heads, self.head_dim), k.view(B, T, self.num_kv_heads, self.head_dim),
                v.view(B, T, self.num_kv_heads, self.head_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
               k_pos: torch.Tensor, start: torch.Tensor | None = None, window: int | None = None) -> torch.Tensor:
        return self.out_proj(self.inner_cross_attn(q, k, v, q_pos, k_pos, start, window))
