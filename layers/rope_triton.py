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

from .attention import FP8_INV_MAX
from .gemv_triton import PDL, gdc_launch_dependents, gdc_wait


@triton.jit
def _round_e4m3(x):
    """x (fp32, |x| <= 448) rounded to the nearest float8 e4m3 value, ties to even, still in fp32, so
    the cast that follows is exact everywhere (Triton's interpreter rounds float8 casts wrongly)."""
    bits = x.to(tl.int32, bitcast=True)
    e = tl.maximum(((bits >> 23) & 0xFF) - 127, -6)  # floor(log2 |x|); below 2**-6 e4m3's steps are 2**-9
    c = ((e + 20 + 127) << 23).to(tl.float32, bitcast=True)  # 2**(e + 20), whose fp32 ulp is e4m3's step 2**(e - 3)
    r = ((tl.abs(x) + c) - c).to(tl.int32, bitcast=True)
    return (r | ((bits >> 31) << 31)).to(tl.float32, bitcast=True)  # x's sign bit (int32 shifts), -0 included


@triton.jit
def _write(dst, x, SC, d, sd, inv_max, D: tl.constexpr, FP8: tl.constexpr):
    """Store one head vector (element stride ``sd``); into a float8 pool as
    ``layers.attention.quantize_kv_fp8`` does: scale = amax * (1/448) (written to SC), values
    x / scale, correctly rounded as torch's division is."""
    if FP8:
        xf = x.to(tl.float32)
        amax = tl.max(tl.where(d < D, tl.abs(xf), 0.0), 0)
        scale = tl.where(amax > 0, amax * inv_max, 1.0)
        xq = _round_e4m3(tl.minimum(tl.maximum(tl.math.div_rn(xf, scale), -448.0), 448.0))
        tl.store(dst + d * sd, xq.to(dst.dtype.element_ty), mask=d < D)
        tl.store(SC, scale)
    else:
        tl.store(dst + d * sd, x, mask=d < D)


@triton.jit
def _rotary_store(Q, K, V, COS, SIN, KC, VC, SLOTS, QOUT, KSC, VSC,
                  sqb, sqh, skb, skh, svb, svh, scb, skcb, skcs, skch, skcd, svcb, svcs, svch, svcd,
                  H, G, inv_max, PAGE: tl.constexpr, D: tl.constexpr, ROT: tl.constexpr, DP: tl.constexpr,
                  FP8: tl.constexpr, PDL: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()  # q, k, v are the previous kernel's output
    slot = tl.load(SLOTS + b)  # int64: block * stride can pass 2**31 in a large pool
    blk, off = slot // PAGE, slot % PAGE
    if head < H:
        src = Q + b * sqb + head * sqh
    elif head < H + G:
        src = K + b * skb + (head - H) * skh
    else:
        src = V + b * svb + (head - H - G) * svh
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
    y = tl.where(rot, y, x)
    if head < H:
        tl.store(QOUT + (b * H + head) * D + d, y, mask=d < D)
    elif head < H + G:
        _write(KC + blk * skcb + off * skcs + (head - H) * skch, y, KSC + slot * G + head - H, d, skcd,
               inv_max, D, FP8)
    else:
        _write(VC + blk * svcb + off * svcs + (head - H - G) * svch, y, VSC + slot * G + head - H - G, d, svcd,
               inv_max, D, FP8)


def rotary_store_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                        k_pool: torch.Tensor, v_pool: torch.Tensor, slots: torch.Tensor,
                        k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`_rotary_store_op`, with empty scale tensors standing for none: a custom op's mutated
    arguments must be tensors (torch drops a None one from the call and its in-place bookkeeping
    then fails on CUDA)."""
    none = slots.new_empty(0, dtype=torch.float32)
    return _rotary_store_op(q, k, v, cos, sin, k_pool, v_pool, slots, none if k_scale is None else k_scale,
                            none if v_scale is None else v_scale)


@torch.library.custom_op("sambay::rotary_store", mutates_args=("k_pool", "v_pool", "k_scale", "v_scale"))
def _rotary_store_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     k_pool: torch.Tensor, v_pool: torch.Tensor, slots: torch.Tensor,
                     k_scale: torch.Tensor, v_scale: torch.Tensor) -> torch.Tensor:
    """q (B, 1, H, D), k and v (B, 1, G, D) (unit last stride), cos and sin (B or 1, 1, rotary_dim),
    pools (num_blocks, block_size, G, D) (any strides), slots (B,) int64 flat slot indices
    (block * block_size + offset) -> rotated q (B, 1, H, D); row b's k rotated and v written at
    slot ``slots[b]``. float8_e4m3fn pools: quantized per
    (token, head), the scales written to ``k_scale``, ``v_scale`` (num_blocks, block_size, G)."""
    B, _, H, D = q.shape
    G, rot = k.shape[2], cos.shape[-1]
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1 and cos.stride(-1) == sin.stride(-1) == 1
    assert cos.stride() == sin.stride() and slots.shape == (B,) and slots.dtype == torch.int64
    assert k_pool.shape == v_pool.shape
    fp8 = k_pool.dtype == torch.float8_e4m3fn
    assert fp8 == (v_pool.dtype == torch.float8_e4m3fn) == (k_scale.numel() > 0) == (v_scale.numel() > 0)
    if fp8:
        assert k_scale.is_contiguous() and v_scale.is_contiguous()
        assert k_scale.shape == v_scale.shape == k_pool.shape[:3] and k_scale.dtype == v_scale.dtype == torch.float32
    out = torch.empty(B, 1, H, D, device=q.device, dtype=q.dtype)
    _rotary_store[(B, H + 2 * G)](
        q, k, v, cos, sin, k_pool, v_pool, slots, out, k_scale if fp8 else slots, v_scale if fp8 else slots,
        q.stride(0), q.stride(2), k.stride(0), k.stride(2), v.stride(0), v.stride(2),
        cos.stride(0) if cos.shape[0] > 1 else 0,
        *k_pool.stride(), *v_pool.stride(), H, G, FP8_INV_MAX, PAGE=k_pool.shape[1], D=D, ROT=rot,
        DP=triton.next_power_of_2(D), FP8=fp8, PDL=PDL, num_warps=1,
        enable_fp_fusion=False,  # keep every product rounded on its own, as torch's ops do
        **({"launch_pdl": True} if PDL else {}))
    return out


@_rotary_store_op.register_fake
def _(q, k, v, cos, sin, k_pool, v_pool, slots, k_scale, v_scale):  # type: ignore[no-untyped-def]
    return torch.empty(q.shape[0], 1, q.shape[2], q.shape[3], device=q.device, dtype=q.dtype)
