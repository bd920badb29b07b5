"""RoPE and the KV-cache write of one decode token, in one Triton kernel.

In the dense model's decode step these are otherwise four or five small kernels per layer
(rotate q, rotate k, write k, write v), each a launch and a few microseconds between two
weight-streaming GEMVs. One program per (row, head): query heads are rotated into the output,
key heads rotated into the cache slot, value heads copied there. Products are rounded where
torch rounds them on tensors of the model dtype, so the result equals the unfused path.

Each row writes at its own flat slot of a paged pool (a static (B, S, G, D) cache is a pool of
B blocks of S slots). Reference twin: :func:`layers.rope.rotary_store_ref`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gemv_triton import PDL, gdc_launch_dependents, gdc_wait


@triton.jit
def _rotary_store(Q, K, V, COS, SIN, KC, VC, SLOTS, QOUT,
                  sqb, sqh, skb, skh, svb, svh, scb, skcs, skch, svcs, svch,
                  H, G, D: tl.constexpr, ROT: tl.constexpr, DP: tl.constexpr, PDL: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()  # q, k, v are the previous kernel's output
    slot = tl.load(SLOTS + b)  # int64: slot * stride can pass 2**31 in a large pool
    if head < H:
        src = Q + b * sqb + head * sqh
        dst = QOUT + (b * H + head) * D
    elif head < H + G:
        src = K + b * skb + (head - H) * skh
        dst = KC + slot * skcs + (head - H) * skch
    else:
        src = V + b * svb + (head - H - G) * svh
        dst = VC + slot * svcs + (head - H - G) * svch
    d = tl.arange(0, DP)
    x = tl.load(src + d, mask=d < D)
    half: tl.constexpr = ROT // 2
    rot = (d < ROT) & (d * 0 + head < H + G)  # a vector on both sides (the interpreter masks with bool vectors only)
    partner = tl.where(d < half, d + half, d - half)
    xp = tl.load(src + partner, mask=rot, other=0.0).to(tl.float32)
    xp = tl.where(d < half, -xp, xp)
    c = tl.load(COS + b * scb + d, mask=rot, other=0.0).to(tl.float32)
    s = tl.load(SIN + b * scb + d, mask=rot, other=0.0).to(tl.float32)
    dt = x.dtype
    y = ((x.to(tl.float32) * c).to(dt).to(tl.float32) + (xp * s).to(dt).to(tl.float32)).to(dt)
    tl.store(dst + d, tl.where(rot, y, x), mask=d < D)


def _slot_stride(pool: torch.Tensor) -> int:
    """The stride of one slot in the pool viewed as (num_blocks * block_size, G, D)."""
    assert pool.stride(-1) == 1 and pool.stride(0) == pool.shape[1] * pool.stride(1), "pool blocks must be dense"
    return pool.stride(1)


@torch.library.custom_op("sambay::rotary_store", mutates_args=("k_pool", "v_pool"))
def rotary_store_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        k_pool: torch.Tensor, v_pool: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """q (B, 1, H, D), k and v (B, 1, G, D) (unit last stride), cos and sin (B or 1, 1, rotary_dim),
    pools (num_blocks, block_size, G, D), slots (B,) int64 flat slot indices -> rotated q (B, 1, H, D);
    row b's k rotated and v written at slot ``slots[b]``."""
    B, _, H, D = q.shape
    G, rot = k.shape[2], cos.shape[-1]
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1 and cos.stride(-1) == sin.stride(-1) == 1
    assert cos.stride() == sin.stride() and slots.shape == (B,) and slots.dtype == torch.int64
    out = torch.empty(B, 1, H, D, device=q.device, dtype=q.dtype)
    _rotary_store[(B, H + 2 * G)](
        q, k, v, cos, sin, k_pool, v_pool, slots, out,
        q.stride(0), q.stride(2), k.stride(0), k.stride(2), v.stride(0), v.stride(2),
        cos.stride(0) if cos.shape[0] > 1 else 0,
        _slot_stride(k_pool), k_pool.stride(2), _slot_stride(v_pool), v_pool.stride(2),
        H, G, D=D, ROT=rot, DP=triton.next_power_of_2(D), PDL=PDL, num_warps=1,
        enable_fp_fusion=False,  # keep every product rounded on its own, as torch's ops do
        **({"launch_pdl": True} if PDL else {}))
    return out


@rotary_store_triton.register_fake
def _(q, k, v, cos, sin, k_pool, v_pool, slots):  # type: ignore[no-untyped-def]
    return torch.empty(q.shape[0], 1, q.shape[2], q.shape[3], device=q.device, dtype=q.dtype)
