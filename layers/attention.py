"""Attention: one masked-softmax kernel (``attend``), its paged twin, and SambaY's differential attention.

Every attention in the package (sliding window, global, cross over a shared cache, one-token
decode, and the dense baseline's GQA) is ``attend(q, k, v, q_pos, k_pos, start, window)``:
queries at absolute positions ``q_pos`` attend to keys at ``k_pos`` (slots with a negative
position are empty), causally, within ``window`` keys when given, skipping each row's left
padding (``start[b]`` = number of pad tokens of row b). Scale is ``q.shape[-1] ** -0.5``.
Positions are shared by the batch ((T,) and (S,)) or per row ((B, T) and (B, S)): in continuous
batching every request has its own length. A query that sees no key at all gets zeros.

Paged K/V (``paged_attend``, ``paged_store``): keys and values live in a pool of fixed-size blocks
(num_blocks, block_size, Hk, D) shared by all requests; row b's position p is in block
``block_table[b, p // block_size]`` at offset ``p % block_size``, i.e. at flat slot
``block_table[b, p // block_size] * block_size + p % block_size`` of the pool viewed as
(num_blocks * block_size, Hk, D). A float8_e4m3fn pool carries float32 scales per (slot, head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import backends
from .linear import Linear, gemv_norm_args
from .norm import RMSNorm


def attention_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, start: torch.Tensor | None = None, window: int | None = None
) -> torch.Tensor:
    """Boolean mask (B or 1, T, S): True where query t may read key s.

    q_pos (T,) or (B, T), k_pos (S,) or (B, S): shared by the batch or per row. A query sees keys
    with ``q_pos - window < k_pos <= q_pos``. A padding query (q_pos < start) sees only itself,
    so no softmax row is empty; its output is never used.
    """
    qp = q_pos.reshape(-1, q_pos.shape[-1], 1)  # (B|1, T, 1)
    kp = k_pos.reshape(-1, 1, k_pos.shape[-1])  # (B|1, 1, S)
    m = (kp <= qp) & (kp >= 0)
    if window is not None:
        m = m & (qp - kp < window)
    if start is not None:
        m = (m & (kp >= start[:, None, None])) | (kp == qp)
    return m


def attention_ref(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Reference: q (B, T, Hq, D), k (B, S, Hk, D), v (B, S, Hk, Dv) -> (B, T, Hq, Dv), fp32 math.

    GQA: query head i reads key/value head ``i // (Hq // Hk)``. ``k_pos=None``: slot s holds
    position s. ``scale`` defaults to ``D ** -0.5``. Positions as in :func:`attention_mask`.
    """
    B, T, Hq, D = q.shape
    S, Hk = k.shape[1], k.shape[2]
    if k_pos is None:
        k_pos = torch.arange(S, device=q.device)
    qf = q.float().reshape(B, T, Hk, Hq // Hk, D)
    scores = torch.einsum("bthrd,bshd->bhrts", qf, k.float()) * (D**-0.5 if scale is None else scale)
    mask = attention_mask(q_pos, k_pos, start, window)  # (B|1, T, S)
    scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    p = scores.softmax(-1).masked_fill(~mask.any(-1)[:, None, None, :, None], 0.0)  # no key visible: zeros, not NaN
    out = torch.einsum("bhrts,bshd->bthrd", p, v.float())
    return out.reshape(B, T, Hq, v.shape[-1]).to(q.dtype)


def _host_positions(q_pos: torch.Tensor, k_pos: torch.Tensor | None, S: int) -> tuple[int, int] | None:
    """(first query position, position of key slot 0) when the positions are shared by the batch
    and the keys are consecutive positions, else None. One device sync: prefill only."""
    if q_pos.dim() > 1 or (k_pos is not None and k_pos.dim() > 1):
        return None
    if k_pos is None:
        return int(q_pos[0]), 0
    q0, k0, k_last = torch.stack([q_pos[0], k_pos[0], k_pos[-1]]).tolist()
    return (q0, k0) if k_last - k0 == S - 1 and bool((k_pos.diff() == 1).all()) else None


# cuDNN's attention builds a graph per new shape (hundreds of ms on the H200); a server's prefills
# (batches of prompts right-padded to the longest) rarely repeat one, so prefill uses the others.
_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def attention_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    window: int | None = None,
    scale: float | None = None,
    block: int = 1024,
) -> torch.Tensor:
    """``attention_ref`` through torch's scaled_dot_product_attention (prefill).

    A plain causal prefill (keys are exactly the queries, no padding, no window) is one
    ``is_causal`` call (the flash kernel). Otherwise queries go in blocks of ``block``, each
    against only the key slots it can see, with an explicit mask. Never the cuDNN backend: see
    ``_SDPA_BACKENDS``.
    """
    with sdpa_kernel(_SDPA_BACKENDS):
        return _attention_sdpa(q, k, v, q_pos, k_pos, start, window, scale, block)


def _attention_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                    k_pos: torch.Tensor | None, start: torch.Tensor | None, window: int | None,
                    scale: float | None, block: int) -> torch.Tensor:
    B, T, Hq, D = q.shape
    S = k.shape[1]
    scale = D**-0.5 if scale is None else scale
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, D)
    host = _host_positions(q_pos, k_pos, S)
    if host is not None and host[0] == host[1] == 0 and T == S and start is None and window is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, scale=scale, enable_gqa=True)
        return out.transpose(1, 2)
    if k_pos is None:
        k_pos = torch.arange(S, device=q.device)
    if kt.shape[1] != Hq:  # the memory-efficient kernel (masks) takes no grouped heads: repeat them
        kt, vt = (x.repeat_interleave(Hq // x.shape[1], dim=1) for x in (kt, vt))
    outs = []
    for i in range(0, T, block):
        j = min(T, i + block)
        lo, hi = 0, S
        if host is not None:  # only the slots these queries can see
            q0, k0 = host
            first = max(0, q0 + i - window + 1) if window is not None else 0
            lo, hi = max(0, first - k0), min(S, q0 + j - k0)
        mask = attention_mask(q_pos[..., i:j], k_pos[..., lo:hi], start, window)[:, None]  # (B|1, 1, t, s)
        outs.append(F.scaled_dot_product_attention(qt[:, :, i:j], kt[:, :, lo:hi], vt[:, :, lo:hi],
                                                   attn_mask=mask, scale=scale))
    return torch.cat(outs, dim=2).transpose(1, 2)


def attention_flash(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor | None = None,
    start: torch.Tensor | None = None, window: int | None = None, scale: float | None = None,
) -> torch.Tensor | None:
    """flash-attn for prefill without padding whose keys are consecutive positions ending at
    the last query (flash's bottom-right causal alignment); None where it does not apply."""
    from flash_attn import flash_attn_func

    host = _host_positions(q_pos, k_pos, k.shape[1])
    if start is not None or host is None or q.shape[-1] != v.shape[-1]:
        return None
    q0, k0 = host
    if k0 + k.shape[1] != q0 + q.shape[1]:
        return None
    first = max(0, k0)  # slots before position 0 are empty
    k, v = k[:, first - k0:], v[:, first - k0:]
    return flash_attn_func(q, k, v, softmax_scale=scale, causal=True,
                           window_size=(window - 1, 0) if window is not None else (-1, -1))


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Every attention of the package. Same contract as :func:`attention_ref`; the backend
    comes from :mod:`layers.backends`. One-token queries on CUDA use the Triton decode kernel."""
    backend = backends.attention_backend(q.device)
    if backend != "ref":
        if q.shape[1] == 1 and q.is_cuda:
            from .attention_triton import decode_attention_triton

            backends.announce("attention decode", "triton")
            return decode_attention_triton(q, k, v, q_pos, k_pos, start, window, scale)
        if backend == "flash" and q.shape[1] > 1:
            out = attention_flash(q, k, v, q_pos, k_pos, start, window, scale)
            if out is not None:
                backends.announce("attention prefill", "flash")
                return out
        backends.announce("attention prefill" if q.shape[1] > 1 else "attention decode", "sdpa")
        return attention_sdpa(q, k, v, q_pos, k_pos, start, window, scale)
    backends.announce("attention", "ref")
    return attention_ref(q, k, v, q_pos, k_pos, start, window, scale)


FP8_MAX = 448.0  # the largest finite float8_e4m3fn
# Scales are amax times 1/448 (in fp32), not amax / 448: torch divides by a Python number through
# its reciprocal on CUDA but exactly on a CPU, while one multiplication rounds alike everywhere,
# the Triton cache write included.
FP8_INV_MAX = 1.0 / FP8_MAX


def quantize_kv_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V vectors x (..., D) -> (float8_e4m3fn values (..., D), float32 scales (...)): one scale per vector
    (weights have their own quantizer, :func:`layers.quant.quantize_fp8`: per-row scales in the layer's dtype),
    ``amax over D / 448``, so the largest element maps to e4m3's largest; ``values * scale``
    is x to e4m3's 3 mantissa bits (relative error <= 2**-4 per element). A zero vector gets scale 1."""
    amax = x.float().abs().amax(-1)
    scale = torch.where(amax > 0, amax * FP8_INV_MAX, 1.0)
    return (x.float() / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def tokens_contiguous(pool: torch.Tensor) -> torch.Tensor:
    """``pool`` (num_blocks, block_size, G, D) as a view of storage (num_blocks, G, D, block_size):
    a block's tokens contiguous per (head, dim). The layout of float8 V pools: P @ V sums over
    tokens, and Hopper's tensor cores take an 8-bit operand from shared memory with ``ldmatrix``
    only along the summed dimension (there is no 8-bit transposing ``ldmatrix``), so a V tile
    stored dim-major cost the decode kernel a scalar shared-memory load per element."""
    return pool.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)


def _store(x: torch.Tensor, pool: torch.Tensor, slots: torch.Tensor, scale: torch.Tensor | None) -> None:
    G, D = pool.shape[-2:]
    x, slots = x.reshape(-1, G, D), slots.reshape(-1)
    if (scale is not None) != (pool.dtype == torch.float8_e4m3fn):
        raise ValueError(f"a {pool.dtype} pool takes {'no scales' if scale is not None else 'scales'}")
    if scale is not None:
        x, s = quantize_kv_fp8(x)
        scale.view(-1, G).index_copy_(0, slots, s)
    if pool.dtype == torch.float8_e4m3fn:  # indexing has no float8 kernels: copy the bytes
        pool, x = pool.view(torch.uint8), x.view(torch.uint8)
    bs = pool.shape[1]
    pool[slots // bs, slots % bs] = x.to(pool.dtype)  # (block, offset): any layout of the pool


def paged_store(k: torch.Tensor, v: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, slots: torch.Tensor,
                k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> None:
    """Write tokens k, v (..., G, D) at flat ``slots`` (int64, their leading shape, e.g. (B,) for a
    decode step or (B, T) for a prefill chunk) of the pools (num_blocks, block_size, G, D), slot
    ``block * block_size + offset`` (any strides: see :func:`tokens_contiguous`). float8_e4m3fn
    pools need ``k_scale``, ``v_scale`` (num_blocks, block_size, G) float32: each (token, head) is
    quantized by :func:`quantize_kv_fp8`.
    Every slot must lie in the pool (a batch's unused rows write to a scratch slot)."""
    _store(k, k_pool, slots, k_scale)
    _store(v, v_pool, slots, v_scale)


def gather_pages(pool: torch.Tensor, block_table: torch.Tensor, used: torch.Tensor | None = None,
                 scale: torch.Tensor | None = None) -> torch.Tensor:
    """pool (num_blocks, block_size, H, D), block_table (B, max_blocks) -> each row's slots in position
    order (B, max_blocks * block_size, H, D); dequantized to float32 with ``scale`` (num_blocks,
    block_size, H). Where ``used`` (B, max_blocks) is False the table entry is not read (block 0 is)."""
    table = block_table.long()
    if used is not None:
        table = torch.where(used, table, 0)
    # contiguous: gathered from a strided pool (tokens_contiguous) the copy keeps the pool's order,
    # and the attention that follows would sum in another order for another batch shape
    if pool.dtype == torch.float8_e4m3fn:  # indexing has no float8 kernels everywhere: gather the bytes
        x = pool.view(torch.uint8)[table].contiguous().view(pool.dtype)
    else:
        x = pool[table].contiguous()  # (B, max_blocks, block_size, H, D)
    if scale is not None:
        x = x.float() * scale[table][..., None]
    return x.flatten(1, 2)


def _paged_keys(k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor, q_pos: torch.Tensor,
                window: int | None, k_scale: torch.Tensor | None, v_scale: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every row's keys and values gathered from the pools, and their positions (B, S): only the
    blocks that hold positions the query can see are read, as the kernels do."""
    if q_pos.dim() != 1 or q_pos.shape[0] != block_table.shape[0]:
        raise ValueError(f"q_pos must be (batch,) = ({block_table.shape[0]},), got {tuple(q_pos.shape)}")
    M, bs = block_table.shape[1], k_pool.shape[1]
    first = torch.arange(M, device=q_pos.device) * bs  # first position of each table entry
    used = (first[None] <= q_pos[:, None])
    if window is not None:
        used = used & (first[None] + bs > q_pos[:, None] - window)
    k = gather_pages(k_pool, block_table, used, k_scale)
    v = gather_pages(v_pool, block_table, used, v_scale)
    k_pos = torch.arange(M * bs, device=q_pos.device).expand(q_pos.shape[0], -1)
    return k, v, k_pos


def paged_attention_ref(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor, q_pos: torch.Tensor,
    window: int | None = None, scale: float | None = None, k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference: one query token per row against paged K/V, fp32 math.

    q (B, 1, Hq, D); k_pool, v_pool (num_blocks, block_size, Hk, D); block_table (B, max_blocks) int32;
    q_pos (B,) int64: row b's query is at position q_pos[b], whose K/V is already written, and it
    attends to its positions 0..q_pos[b] (``window``: the last ``window`` of them). Table entries
    past those blocks are never read. A row with q_pos < 0 reads nothing and gets zeros (a batch's
    unused rows). float8_e4m3fn pools: values are ``pool.float() * scale[..., None]``.
    -> (B, 1, Hq, Dv) in q's dtype.
    """
    k, v, k_pos = _paged_keys(k_pool, v_pool, block_table, q_pos, window, k_scale, v_scale)
    return attention_ref(q, k, v, q_pos[:, None], k_pos, window=window, scale=scale)


def paged_attend(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor, q_pos: torch.Tensor,
    window: int | None = None, scale: float | None = None, k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`paged_attention_ref`'s contract; the Triton kernel on CUDA unless the attention backend is ``ref``."""
    if q.is_cuda and backends.attention_backend(q.device) != "ref" and not backends.needs_autograd(q, k_pool, v_pool):
        from .attention_triton import paged_attention_triton

        backends.announce("paged attention decode", "triton")
        return paged_attention_triton(q, k_pool, v_pool, block_table, q_pos, window, scale, k_scale, v_scale)
    backends.announce("paged attention decode", "ref")
    return paged_attention_ref(q, k_pool, v_pool, block_table, q_pos, window, scale, k_scale, v_scale)


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
        k_pos: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
        window: int | None = None,
    ) -> torch.Tensor:
        """q (B, T, H, D), k and v (B, S, G, D) -> (B, T, H * D).

        Both stripes run as one GQA attention over G/2 "pair" heads of width 2D, so K and V
        are read once: a pair head is ``[k_even | k_odd]`` (a free view of k), and each query
        is placed block-diagonally, ``[q, 0]`` for stripe 1 and ``[0, q]`` for stripe 2, so its
        dot product picks its own stripe's key; the scale stays ``D ** -0.5``.
        """
        if (q.shape[1] == 1 and q.is_cuda and backends.attention_backend(q.device) != "ref"
                and not backends.needs_autograd(q, k, v, self)):
            from .attention_triton import decode_diff_attention_triton

            backends.announce("differential attention decode", "triton")
            return decode_diff_attention_triton(q, k, v, q_pos, k_pos, start, window, self.lambda_q1, self.lambda_k1,
                                                self.lambda_q2, self.lambda_k2, self.lambda_init, self.subln.weight,
                                                self.subln.eps)
        return self._differential(attend, q, k, v, q_pos, k_pos, start, window)

    def forward_paged(self, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor,
                      q_pos: torch.Tensor, k_scale: torch.Tensor | None = None,
                      v_scale: torch.Tensor | None = None) -> torch.Tensor:
        """One query token per row against paged K/V (see :func:`paged_attention_ref`): q (B, 1, H, D),
        pools (num_blocks, block_size, G, D) -> (B, 1, H * D). The reference gathers each row's
        keys and runs :meth:`forward`'s differential math in fp32 attention; on CUDA one Triton
        kernel pair reads the pools through the table, as :meth:`forward`'s decode does."""
        if (q.is_cuda and backends.attention_backend(q.device) != "ref"
                and not backends.needs_autograd(q, k_pool, v_pool, self)):
            from .attention_triton import paged_diff_attention_triton

            backends.announce("paged differential attention decode", "triton")
            return paged_diff_attention_triton(q, k_pool, v_pool, block_table, q_pos, k_scale, v_scale,
                                               self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2,
                                               self.lambda_init, self.subln.weight, self.subln.eps)
        k, v, k_pos = _paged_keys(k_pool, v_pool, block_table, q_pos, None, k_scale, v_scale)
        return self._differential(attention_ref, q, k, v, q_pos[:, None], k_pos, None, None)

    def _differential(self, attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                      k_pos: torch.Tensor | None, start: torch.Tensor | None, window: int | None) -> torch.Tensor:
        """The differential math around one pair-head attention ``attn`` (:func:`attend` or its reference)."""
        B, T, H, D = q.shape
        S, G = k.shape[1], k.shape[2]
        r = H // G
        qs = q.view(B, T, G // 2, r, 2, D)  # head 2 * (j * r + t) + stripe
        zero = torch.zeros_like(qs[..., 0, :])
        q_pair = torch.stack([torch.cat([qs[..., 0, :], zero], -1), torch.cat([zero, qs[..., 1, :]], -1)], dim=3)
        q_pair = q_pair.view(B, T, H, 2 * D)  # (B, T, [G/2, stripe, r], 2D)
        a = attn(q_pair, k.reshape(B, S, G // 2, 2 * D), v.reshape(B, S, G // 2, 2 * D),
                 q_pos, k_pos, start, window, scale=D**-0.5).view(B, T, G // 2, 2, r, 2 * D)
        a1, a2 = a[:, :, :, 0].reshape(B, T, H // 2, 2 * D), a[:, :, :, 1].reshape(B, T, H // 2, 2 * D)
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
        self.Wqkv = Linear(dim, out * self.head_dim, bias=True)
        self.inner_cross_attn = DiffAttnCore(self.head_dim, layer_idx, eps)
        self.out_proj = Linear(num_heads * self.head_dim, dim, bias=True)

    def project(self, x: torch.Tensor, norm: nn.Module | None = None,
                ring: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """x (B, T, d) -> q (B, T, H, D) and, for self-attention, k, v (B, T, G, D), from ``norm(x)``.

        ``ring = (ring_k, ring_v, rows, at)`` (one-token decoding of a sliding-window layer; rings
        (B, W, G, D)): k and v also go into slot ``at[b]`` of row ``rows[b]``'s rings, at one row
        inside Wqkv's GEMV (no launch of their own)."""
        B, T, _ = x.shape
        w = self.Wqkv
        fused = gemv_norm_args(x, w.weight, w.bias, norm) if ring is not None else None
        if fused is not None:
            from .gemv_triton import gemv_ring_op

            ring_k, ring_v, _, at = ring
            qkv = gemv_ring_op(x.reshape(-1).contiguous(), w.weight, w.bias, *fused, w.weight_scale, ring_k[0],
                               ring_v[0], at, self.num_heads * self.head_dim).view(B, T, -1)
        else:
            qkv = w(x, norm=norm)
        if self.cross:
            return qkv.view(B, T, self.num_heads, self.head_dim), None, None
        q, k, v = qkv.split([self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim,
                             self.num_kv_heads * self.head_dim], dim=-1)
        q, k, v = (q.view(B, T, self.num_heads, self.head_dim), k.view(B, T, self.num_kv_heads, self.head_dim),
                   v.view(B, T, self.num_kv_heads, self.head_dim))
        if ring is not None and fused is None:
            ring_k, ring_v, rows, at = ring
            ring_k.index_put_((rows, at), k[:, 0])
            ring_v.index_put_((rows, at), v[:, 0])
        return q, k, v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
               k_pos: torch.Tensor | None, start: torch.Tensor | None = None, window: int | None = None,
               residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + out_proj(differential attention)``."""
        return self.out_proj(self.inner_cross_attn(q, k, v, q_pos, k_pos, start, window), residual=residual)

    def attend_paged(self, q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor,
                     q_pos: torch.Tensor, residual: torch.Tensor | None = None, k_scale: torch.Tensor | None = None,
                     v_scale: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + out_proj(differential attention)`` of one query per row over paged K/V
        (float8 pools with their ``k_scale``, ``v_scale``)."""
        return self.out_proj(self.inner_cross_attn.forward_paged(q, k_pool, v_pool, block_table, q_pos, k_scale,
                                                                 v_scale), residual=residual)
