"""Flash-decoding in Triton: one query token per row against a preallocated K/V buffer or a paged pool.

Its reference twins are :func:`layers.attention.attention_ref` with T = 1 and
:func:`layers.attention.paged_attention_ref`. Shapes are static and positions live on the device
(so the call can be captured in a CUDA graph), per row (each request its own length), and only
the keys a query may see are read: with ``k_pos=None`` slot s holds position s and the scan
stops at the row's query position, with ``k_pos`` (a ring buffer's slot positions, shared or
per row) every slot is read and masked by its position. Paged: row b's slot s is at
``block_table[b, s // block_size]`` of the pool, offset ``s % block_size`` (pools of any strides);
float8 pools go into the dots as they are (e4m3 converts exactly) and their per-(slot, head)
scales multiply the scores and the probabilities, which are small tiles, rather than the K and V
tiles; a float8 V pool is read fastest with a block's tokens contiguous
(``layers.attention.tokens_contiguous``, the cache's layout).

The key range is split over ``num_splits`` programs per (row, KV head); a second kernel
merges their partial softmax sums.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .gemv_triton import INTERPRET, PDL, gdc_launch_dependents, gdc_wait


@triton.jit
def _visible_splits(QPOS, START, b, sqp, S, window, HAS_KPOS: tl.constexpr, HAS_START: tl.constexpr,
                    HAS_WINDOW: tl.constexpr, BLOCK: tl.constexpr, SPLITS: tl.constexpr):
    """Row b's query position, the first slot that can be visible, one past the last, the slots
    per split (the visible range cut in SPLITS, in whole blocks: splits past its end are empty)
    and the number of non-empty splits. A row whose query position is negative sees nothing."""
    qp = tl.load(QPOS + b * sqp)
    lo = 0
    hi = S
    if not HAS_KPOS:  # slot == position: only slots lo..qp can be visible
        hi = tl.minimum(qp + 1, S)
        if HAS_WINDOW:
            lo = tl.maximum(lo, qp - window + 1)
        if HAS_START:
            lo = tl.maximum(lo, tl.load(START + b))
    n = tl.maximum(hi - lo, 0)
    chunk = tl.maximum(tl.cdiv(tl.cdiv(n, SPLITS), BLOCK), 1) * BLOCK
    return qp, lo, hi, chunk, tl.cdiv(n, chunk)


@triton.jit
def _key_scales(SC, at, h, valid, SUB: tl.constexpr, HKO: tl.constexpr):
    """The per-(slot, head) scales of kernel head h's keys, (BLOCK,) each: SUB consecutive heads of
    the pool form one kernel head (2: differential attention's pair heads, whose halves have their
    own scales; with SUB == 1 the second is the first)."""
    base = at * HKO + h * SUB  # at: flat slot index of each key
    s0 = tl.load(SC + base, mask=valid, other=0.0)
    if SUB == 1:
        return s0, s0
    return s0, tl.load(SC + base + 1, mask=valid, other=0.0)


@triton.jit
def _block(s0, q, second_q, upper, m_i, l_i, acc, K, V, KPOS, BT, KS, VS, kbase, vbase, kpbase, btbase, skb, sks, svb,
           svs, svd, qp, st, s_hi,
           scale, window, HAS_KPOS: tl.constexpr, HAS_START: tl.constexpr, HAS_WINDOW: tl.constexpr,
           PAGED: tl.constexpr, PAGE: tl.constexpr, FP8: tl.constexpr, SUB: tl.constexpr, HKO: tl.constexpr,
           h, DK: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, IEEE: tl.constexpr, STACK: tl.constexpr):
    """Online-softmax update with the keys of slots s0 .. s0 + BLOCK. Paged: slot s of the row is
    pool slot ``block_table[s // PAGE] * PAGE + s % PAGE``. ``second_q`` (rows,): query rows that
    read the second half of a differential pair head (whose keys have the second scale); ``upper``
    (rows,): with ``STACK``, the rows that repeat the query rows above them and take the values'
    second scale (their P @ V gives the right half of the pair head's columns)."""
    offs = s0 + tl.arange(0, BLOCK)
    valid = offs < s_hi
    if HAS_KPOS:
        kp = tl.load(KPOS + kpbase + offs, mask=valid, other=-1)
        valid = valid & (kp >= 0) & (kp <= qp)
        if HAS_WINDOW:
            valid = valid & (qp - kp < window)
        if HAS_START:
            valid = valid & (kp >= st)
    if PAGED:
        # One block id per page of the tile; pages past the visible range read the scratch block 0
        # (masked per page, not per key, so the compiler still sees a page's keys as contiguous)
        page = offs // PAGE
        blk = tl.load(BT + btbase + page, mask=page * PAGE < s_hi, other=0).to(tl.int64)
        at = blk * PAGE + offs % PAGE  # flat slot: the scales' index
        krow, vrow = blk * skb + offs % PAGE * sks, blk * svb + offs % PAGE * svs
    else:
        at = offs
        krow, vrow = at * sks, at * svs
    kt = tl.load(K + kbase + krow[:, None] + tl.arange(0, DK)[None, :], mask=valid[:, None], other=0.0)
    if FP8:
        # Loaded (DV, BLOCK), unmasked (every key's block is a real or the scratch block; keys past
        # the range weigh 0): in a pool of contiguous tokens (layers.attention.tokens_contiguous) a
        # page's keys are one vector, and the tile reaches the P @ V dot the way an 8-bit operand
        # can be read from shared memory (ldmatrix along the summed dimension)
        vt = tl.trans(tl.load(V + vbase + vrow[None, :] + tl.arange(0, DV)[:, None] * svd))
        # e4m3 -> the queries' dtype (f16 or fp32) is exact; the scales apply to the dots' results (fp32)
        kt = kt.to(q.dtype)
        vt = vt.to(q.dtype)
    else:
        vt = tl.load(V + vbase + vrow[:, None] + tl.arange(0, DV)[None, :] * svd, mask=valid[:, None], other=0.0)
    if IEEE:
        sc = tl.dot(q, tl.trans(kt), input_precision="ieee")
    else:
        sc = tl.dot(q, tl.trans(kt))
    if FP8:  # q . (k8 s) = (q . k8) s; a differential query row reads one half of its pair head
        ks0, ks1 = _key_scales(KS, at, h, valid, SUB, HKO)
        sc = sc * tl.where(second_q[:, None], ks1[None, :], ks0[None, :])
    sc = tl.where(valid[None, :], sc * scale, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(sc, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp(sc - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    if FP8:  # sum_j p_j (v8_j s_j) = sum_j (p_j s_j) v8_j, per half of a pair head's columns
        vs0, vs1 = _key_scales(VS, at, h, valid, SUB, HKO)
        if STACK:  # one product: the upper rows carry the second scale (the merge takes their right half)
            pv = _pv_scaled(p, tl.where(upper[:, None], vs1[None, :], vs0[None, :]), vt, IEEE)
        else:
            pv = _pv_scaled(p, vs0[None, :], vt, IEEE)
            if SUB == 2:
                pv = tl.where((tl.arange(0, DV) >= DV // 2)[None, :], _pv_scaled(p, vs1[None, :], vt, IEEE), pv)
    else:
        pv = _pv(p, vt, IEEE)
    return m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None] + pv


@triton.jit
def _pv_scaled(p, w, vt, IEEE: tl.constexpr):
    """p (rows, BLOCK) fp32 times the keys' value scales w (rows or 1, BLOCK), @ the float8 tile vt
    (BLOCK, DV) widened to f16 (or fp32) -> fp32. In f16 each row of p * w is first brought to a
    maximum of 2**14 and the factor divided out in fp32: probabilities over a long flat row, times
    scales of small values, fall below f16's normal range (6e-5) and lose their digits."""
    pw = p * w
    if IEEE:
        return _pv(pw, vt, IEEE)
    top = tl.max(pw, 1)
    up = tl.where(top > 0, 16384.0 / top, 0.0)
    return tl.dot((pw * up[:, None]).to(vt.dtype), vt) * tl.where(top > 0, top / 16384.0, 0.0)[:, None]


@triton.jit
def _pv(p, vt, IEEE: tl.constexpr):
    """p (rows, BLOCK) fp32 @ vt (BLOCK, DV) -> fp32: in fp32 for fp32 models, else in vt's dtype."""
    if IEEE:
        return tl.dot(p, vt.to(tl.float32), input_precision="ieee")
    return tl.dot(p.to(vt.dtype), vt)


@triton.jit
def _partial(Q, K, V, QPOS, KPOS, START, BT, KS, VS, ACC, ML,
             sqb, sqh, sqp, skpb, skb, sks, skh, svb, svs, svh, svd, sbt,
             S, HK, R, scale, window,
             HAS_KPOS: tl.constexpr, HAS_START: tl.constexpr, HAS_WINDOW: tl.constexpr,
             PAGED: tl.constexpr, PAGE: tl.constexpr, FP8: tl.constexpr, SUB: tl.constexpr, HKO: tl.constexpr,
             RP: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr,
             SPLITS: tl.constexpr, IEEE: tl.constexpr, PIPELINE: tl.constexpr, DIFF: tl.constexpr,
             STACK: tl.constexpr, PDL: tl.constexpr):
    if PDL:
        gdc_launch_dependents()
        gdc_wait()  # q and the cache's newest slot come from the previous kernels
    pid = tl.program_id(0)
    split = tl.program_id(1)
    b = (pid // HK).to(tl.int64)  # b * (row stride) can pass 2**31 in a large cache
    h = pid % HK
    qp, lo, hi, chunk, live = _visible_splits(QPOS, START, b, sqp, S, window, HAS_KPOS, HAS_START, HAS_WINDOW,
                                              BLOCK, SPLITS)
    st = 0
    if HAS_START:
        st = tl.load(START + b)
    s_lo = lo + split * chunk
    s_hi = tl.minimum(hi, s_lo + chunk)

    rows = tl.arange(0, RP)
    upper = rows < 0
    if DIFF:  # differential attention's block-diagonal queries: row s * R/2 + t is [q, 0] or [0, q]
        half: tl.constexpr = DK // 2
        live_rows = rows < R
        qrow = rows
        if STACK:  # rows R .. 2R-1 repeat rows 0 .. R-1 (the padding rows hold them: 2R <= RP)
            upper = (rows >= R) & (rows < 2 * R)
            live_rows = rows < 2 * R
            qrow = tl.where(upper, rows - R, rows)
        stripe = qrow // (R // 2)
        head = 2 * (h * (R // 2) + qrow % (R // 2)) + stripe
        c = tl.arange(0, DK)[None, :]
        q = tl.load(Q + b * sqb + head[:, None] * sqh + c - stripe[:, None] * half,
                    mask=live_rows[:, None] & (c // half == stripe[:, None]), other=0.0)
        second_q = stripe == 1
    else:
        q = tl.load(Q + b * sqb + (h * R + rows)[:, None] * sqh + tl.arange(0, DK)[None, :],
                    mask=(rows < R)[:, None], other=0.0)
        second_q = rows < 0
    if FP8 and not IEEE:  # e4m3 -> f16 is one conversion per two values, e4m3 -> bf16 goes through f16
        q = q.to(tl.float16)
    m_i = tl.full((RP,), float("-inf"), tl.float32)
    l_i = tl.zeros((RP,), tl.float32)
    acc = tl.zeros((RP, DV), tl.float32)
    if PAGED:  # slots are addressed through the row's block table
        kbase, vbase = h * skh, h * svh
    else:
        kbase, vbase = b * skb + h * skh, b * svb + h * svh
    kpbase, btbase = b * skpb, b * sbt
    if PIPELINE:  # a for loop: the compiler prefetches the next blocks' K and V
        for s0 in range(s_lo, s_hi, BLOCK):
            m_i, l_i, acc = _block(s0, q, second_q, upper, m_i, l_i, acc, K, V, KPOS, BT, KS, VS, kbase, vbase,
                                   kpbase, btbase, skb, sks, svb, svs, svd, qp, st, s_hi, scale, window, HAS_KPOS,
                                   HAS_START, HAS_WINDOW, PAGED, PAGE, FP8, SUB, HKO, h, DK, DV, BLOCK, IEEE, STACK)
    else:  # Triton's interpreter (TRITON_INTERPRET=1, for checks on a CPU) cannot range() over runtime bounds
        s0 = s_lo
        while s0 < s_hi:
            m_i, l_i, acc = _block(s0, q, second_q, upper, m_i, l_i, acc, K, V, KPOS, BT, KS, VS, kbase, vbase,
                                   kpbase, btbase, skb, sks, svb, svs, svd, qp, st, s_hi, scale, window, HAS_KPOS,
                                   HAS_START, HAS_WINDOW, PAGED, PAGE, FP8, SUB, HKO, h, DK, DV, BLOCK, IEEE, STACK)
            s0 += BLOCK
    base = (pid * SPLITS + split) * RP
    dv = tl.arange(0, DV)
    tl.store(ACC + (base + rows)[:, None] * DV + dv[None, :], acc)
    tl.store(ML + (base + rows) * 2, m_i)
    tl.store(ML + (base + rows) * 2 + 1, l_i)


@triton.jit
def _merge(ACC, ML, pid, r, live, R, RP: tl.constexpr, DV: tl.constexpr, SPLITS: tl.constexpr,
           STACK: tl.constexpr):
    """Query row r of (row, KV head) ``pid``: all splits' partial sums merged, in fp32 (zeros
    where no key was visible). ``STACK``: the right half of the columns is row r + R's (the same
    scores, so the same softmax statistics)."""
    at = (pid * SPLITS + tl.arange(0, SPLITS)) * RP + r
    m = tl.load(ML + at * 2, mask=live, other=float("-inf"))
    m_max = tl.max(m, 0)
    m_max = tl.where(m_max == float("-inf"), 0.0, m_max)
    w = tl.exp(m - m_max)  # empty splits weigh 0
    denom = tl.sum(w * tl.load(ML + at * 2 + 1, mask=live, other=0.0), 0)
    dv = tl.arange(0, DV)[None, :]
    row = at[:, None] + R * (dv >= DV // 2) if STACK else at[:, None]
    a = tl.load(ACC + row * DV + dv, mask=live[:, None], other=0.0)  # (SPLITS, DV)
    return tl.sum(w[:, None] * a, 0) / tl.where(denom > 0, denom, 1.0)


@triton.jit
def _combine(ACC, ML, OUT, QPOS, START, LQ1, LK1, LQ2, LK2, SUBLN, sob, soh, sqp, S, HK, R, window, lambda_init, eps,
             HAS_KPOS: tl.constexpr, HAS_START: tl.constexpr, HAS_WINDOW: tl.constexpr,
             RP: tl.constexpr, DV: tl.constexpr, BLOCK: tl.constexpr, SPLITS: tl.constexpr,
             DIFF: tl.constexpr, LD: tl.constexpr, STACK: tl.constexpr, PDL: tl.constexpr):
    """One program per (row, KV head, query row): all splits' partial sums in one load. With
    ``DIFF``, one per (row, pair head, t): stripes 1 and 2 of output head t merged, then
    ``RMSNorm(a_1 - lambda a_2) * (1 - lambda_init)``, rounded where torch rounds it."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()
    pid = tl.program_id(0)
    r = tl.program_id(1)
    b = (pid // HK).to(tl.int64)
    h = pid % HK
    _, _, _, _, nonempty = _visible_splits(QPOS, START, b, sqp, S, window, HAS_KPOS, HAS_START, HAS_WINDOW,
                                           BLOCK, SPLITS)
    live = tl.arange(0, SPLITS) < nonempty  # later splits are empty: skip reading them
    dt = OUT.dtype.element_ty
    dv = tl.arange(0, DV)
    if DIFF:
        a1 = _merge(ACC, ML, pid, r, live, R, RP, DV, SPLITS, STACK).to(dt).to(tl.float32)
        a2 = _merge(ACC, ML, pid, R // 2 + r, live, R, RP, DV, SPLITS, STACK).to(dt).to(tl.float32)
        d = tl.arange(0, LD)
        lam = (tl.exp(tl.sum(tl.load(LQ1 + d).to(tl.float32) * tl.load(LK1 + d).to(tl.float32), 0))
               - tl.exp(tl.sum(tl.load(LQ2 + d).to(tl.float32) * tl.load(LK2 + d).to(tl.float32), 0)) + lambda_init)
        x = (a1 - (lam.to(dt).to(tl.float32) * a2).to(dt).to(tl.float32)).to(dt).to(tl.float32)
        x = (x * tl.rsqrt(tl.sum(x * x, 0) / DV + eps)).to(dt).to(tl.float32)
        x = (x * tl.load(SUBLN + dv).to(tl.float32)).to(dt).to(tl.float32)
        out = x * (1.0 - lambda_init)
        tl.store(OUT + b * sob + (h * (R // 2) + r) * DV + dv, out.to(dt))
    else:
        out = _merge(ACC, ML, pid, r, live, R, RP, DV, SPLITS, STACK)
        tl.store(OUT + b * sob + (h * R + r) * soh + dv, out.to(dt))


def launch_config(batch: int, kv_heads: int, fp8: bool = False, fp32: bool = False,
                  num_sms: int = 132) -> tuple[int, int, int]:
    """(keys per block, warps, pipeline stages), from a sweep on the H200 (paged pools of 16- and
    64-slot blocks, 32K keys, both models' heads, `examples/bench_paged_attention.py --sweep`): once
    the (row, KV head) pairs fill the GPU, 128-key blocks, 4 warps and 3 stages read bf16 pools at
    4.0-4.5 TB/s (8 warps, 2 stages: 2.9-4.0) and float8 ones at 2.1-4.0 (8 warps: 1.3-1.9); below
    that, 64-key blocks suit bf16 and 128-key blocks float8. fp32 tiles take twice the shared
    memory: two stages (three would not fit 128 keys of 128-wide heads)."""
    stages = 2 if fp32 else 3
    if batch * kv_heads >= num_sms or fp8:
        return 128, 4, stages
    return 64, 4, stages


def num_splits(batch: int, kv_heads: int, slots: int, num_sms: int = 132, block: int = 64,
               span: int = 8192) -> int:
    """Programs per (row, KV head): enough to fill the GPU about four times over, at least 64
    slots (one block) each, a power of two. At batch 1 a short cache split finely keeps each
    program's serial walk short: the step is latency-bound there, not bandwidth-bound. ``slots``
    is the capacity (static shapes: CUDA graphs); each row cuts its own visible range in as many
    splits, so a short row's programs are short and those past its end are empty. And at least
    ``slots / span``, however many rows fill the GPU: in a continuous batch rows of 2K and of 34K
    tokens sit side by side, and one program walking a whole long row ends the step late (on the
    H200, dense at 83 rows of mixed lengths up to 34K: 3.43 TB/s in one split, 3.94 in four or
    eight; ``examples/bench_paged_attention.py --sweep-splits``)."""
    fill = triton.cdiv(4 * num_sms, batch * kv_heads)
    want = max(1, min(64, triton.cdiv(slots, block), max(fill, triton.cdiv(slots, span))))
    return triton.next_power_of_2(want)


def _batch_stride(pos: torch.Tensor) -> int:
    """Stride between rows of a position tensor: 0 for one shared by the batch ((T,) or (S,))."""
    return pos.stride(0) if pos.dim() > 1 else 0


def _decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor | None,
            start: torch.Tensor | None, window: int | None, scale: float, diff: tuple | None,
            block_table: torch.Tensor | None = None, k_scale: torch.Tensor | None = None,
            v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Both launches. ``diff = (lambda_q1, lambda_k1, lambda_q2, lambda_k2, lambda_init, subln weight,
    eps)``: q (B, 1, H, D) are differential attention's query heads and k, v its pair heads.
    k, v: (B, S, Hk, D) per row, or with ``block_table`` (B, max_blocks) pools (num_blocks,
    block_size, Hk, D) of S = max_blocks * block_size slots per row; ``k_scale``, ``v_scale``
    (num_blocks, block_size, heads) for float8 pools (heads = Hk, or 2 Hk for pair heads)."""
    B, HK, DV = q.shape[0], k.shape[2], v.shape[-1]
    DK = k.shape[-1]
    paged = block_table is not None
    S = block_table.shape[1] * k.shape[1] if paged else k.shape[1]
    if paged:  # block strides are the pools' first: slot s of a row is (block_table[s // bs], s % bs)
        assert block_table.stride(-1) == 1 and k_pos is None and start is None
    fp8 = k.dtype == torch.float8_e4m3fn
    assert fp8 == (v.dtype == torch.float8_e4m3fn) == (k_scale is not None) == (v_scale is not None)
    if fp8:
        assert paged and k_scale.is_contiguous() and v_scale.is_contiguous() and k_scale.shape == v_scale.shape
        assert k_scale.shape[:2] == k.shape[:2] and k_scale.dtype == v_scale.dtype == torch.float32
    assert q_pos.numel() in (1, B) and (k_pos is None or k_pos.stride(-1) == 1)
    hko = k_scale.shape[-1] if fp8 else HK
    assert hko == HK * (2 if fp8 and diff else 1)  # two scales per key only for a pair head's halves
    R = q.shape[2] // HK  # query rows per KV head (with diff: r heads of each stripe per pair head)
    RP = max(16, triton.next_power_of_2(R))
    # float8 pair heads: the halves' value scales differ, so P @ V is two products, or one when the
    # padding rows can repeat the query rows with the second scale
    stack = fp8 and hko == 2 * HK and 2 * R <= RP
    block, warps, stages = launch_config(B, HK, fp8, q.dtype == torch.float32)
    splits = num_splits(B, HK, S, block=block)
    acc = torch.empty(B * HK * splits * RP, DV, device=q.device, dtype=torch.float32)
    ml = torch.empty(B * HK * splits * RP, 2, device=q.device, dtype=torch.float32)
    out = torch.empty(B, 1, HK * R // (2 if diff else 1), DV, device=q.device, dtype=q.dtype)
    dummy = q_pos
    launch = {"launch_pdl": True} if PDL else {}  # see layers.gemv_triton
    flags = dict(HAS_KPOS=k_pos is not None, HAS_START=start is not None, HAS_WINDOW=window is not None)
    sqp = q_pos.stride(0) if q_pos.numel() > 1 else 0
    _partial[(B * HK, splits)](
        q, k, v, q_pos, k_pos if k_pos is not None else dummy, start if start is not None else dummy,
        block_table if paged else dummy, k_scale if fp8 else dummy, v_scale if fp8 else dummy, acc, ml,
        q.stride(0), q.stride(2), sqp, _batch_stride(k_pos) if k_pos is not None else 0,
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), v.stride(3),
        block_table.stride(0) if paged else 0, S, HK, R, scale, window or 0, **flags,
        PAGED=paged, PAGE=k.shape[1] if paged else 1, FP8=fp8, SUB=hko // HK, HKO=hko,
        RP=RP, DK=DK, DV=DV, BLOCK=block, SPLITS=splits, IEEE=q.dtype == torch.float32,
        PIPELINE=not INTERPRET, DIFF=diff is not None, STACK=stack, PDL=PDL, num_warps=warps, num_stages=stages,
        **launch,
    )
    lq1, lk1, lq2, lk2, lambda_init, subln, eps = diff or (dummy,) * 4 + (0.0, dummy, 0.0)
    _combine[(B * HK, R // 2 if diff else R)](
        acc, ml, out, q_pos, start if start is not None else dummy, lq1, lk1, lq2, lk2, subln,
        out.stride(0), out.stride(2), sqp, S, HK, R, window or 0, lambda_init, eps, **flags,
        RP=RP, DV=DV, BLOCK=block, SPLITS=splits, DIFF=diff is not None, LD=lq1.numel() if diff else 1, STACK=stack,
        PDL=PDL,
        enable_fp_fusion=False, **launch)  # the epilogue rounds each step where torch does
    return out


@torch.library.custom_op("sambay::decode_attention", mutates_args=())
def decode_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    window: int | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """q (B, 1, Hq, Dk), k (B, S, Hk, Dk), v (B, S, Hk, Dv) (any strides with unit last stride),
    q_pos (1,) shared or (B,) / (B, 1) per row, k_pos None, (S,) or (B, S) -> (B, 1, Hq, Dv).
    Same semantics as ``attention_ref`` for one query token."""
    assert q.shape[1] == 1 and k.stride(-1) == 1 and v.stride(-1) == 1 and q.stride(-1) == 1
    return _decode(q, k, v, q_pos, k_pos, start, window, scale if scale is not None else q.shape[-1] ** -0.5, None)


@decode_attention_triton.register_fake
def _(q, k, v, q_pos, k_pos=None, start=None, window=None, scale=None):  # type: ignore[no-untyped-def]
    return q.new_empty(q.shape[0], 1, q.shape[2], v.shape[-1])


@torch.library.custom_op("sambay::paged_attention", mutates_args=())
def paged_attention_triton(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor, q_pos: torch.Tensor,
    window: int | None = None, scale: float | None = None, k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """q (B, 1, Hq, D), pools (num_blocks, block_size, Hk, D) (K with unit last stride, V any),
    block_table (B, max_blocks) int32, q_pos (B,) -> (B, 1, Hq, Dv): what
    :func:`layers.attention.paged_attention_ref` computes. Only the blocks holding visible
    positions are read; float8 pools are read with their scales."""
    assert q.shape[1] == 1 and q.stride(-1) == 1 and k_pool.stride(-1) == 1
    return _decode(q, k_pool, v_pool, q_pos, None, None, window, scale if scale is not None else q.shape[-1] ** -0.5,
                   None, block_table, k_scale, v_scale)


@paged_attention_triton.register_fake
def _(q, k_pool, v_pool, block_table, q_pos, window=None, scale=None, k_scale=None,
      v_scale=None):  # type: ignore[no-untyped-def]
    return q.new_empty(q.shape[0], 1, q.shape[2], v_pool.shape[-1])


def _pair_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., G, D) -> (..., G / 2, 2D): differential attention's pair heads, a free view."""
    return x.view(*x.shape[:-2], x.shape[-2] // 2, 2 * x.shape[-1])


@torch.library.custom_op("sambay::decode_diff_attention", mutates_args=())
def decode_diff_attention_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor | None,
    start: torch.Tensor | None, window: int | None, lambda_q1: torch.Tensor, lambda_k1: torch.Tensor,
    lambda_q2: torch.Tensor, lambda_k2: torch.Tensor, lambda_init: float, subln_weight: torch.Tensor, eps: float,
) -> torch.Tensor:
    """Differential attention of one query token, whole: q (B, 1, H, D), k and v (B, S, G, D) ->
    (B, 1, H * D), what :class:`layers.attention.DiffAttnCore` computes. The block-diagonal queries
    are built as the kernel loads them, and lambda, the difference and the sub-layer RMSNorm are the
    merge kernel's epilogue: two launches instead of six or seven. Positions as in
    :func:`decode_attention_triton`."""
    B, S, G, D = k.shape
    assert q.shape[1] == 1 and q.stride(-1) == 1 and k.stride(-1) == v.stride(-1) == 1
    diff = (lambda_q1, lambda_k1, lambda_q2, lambda_k2, lambda_init, subln_weight, eps)
    return _decode(q, _pair_heads(k), _pair_heads(v), q_pos, k_pos, start, window, D**-0.5, diff).view(B, 1, -1)


@decode_diff_attention_triton.register_fake
def _(q, k, v, q_pos, k_pos, start, window, lambda_q1, lambda_k1, lambda_q2, lambda_k2, lambda_init, subln_weight,
      eps):  # type: ignore[no-untyped-def]
    return q.new_empty(q.shape[0], 1, q.shape[2] * q.shape[3])


@torch.library.custom_op("sambay::paged_diff_attention", mutates_args=())
def paged_diff_attention_triton(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, block_table: torch.Tensor, q_pos: torch.Tensor,
    k_scale: torch.Tensor | None, v_scale: torch.Tensor | None, lambda_q1: torch.Tensor, lambda_k1: torch.Tensor,
    lambda_q2: torch.Tensor, lambda_k2: torch.Tensor, lambda_init: float, subln_weight: torch.Tensor, eps: float,
) -> torch.Tensor:
    """:func:`decode_diff_attention_triton` over paged pools (num_blocks, block_size, G, D) read
    through ``block_table`` (B, max_blocks), q_pos (B,): what
    :meth:`layers.attention.DiffAttnCore.forward_paged` computes. A pair head has the scales of
    its two heads (``k_scale``, ``v_scale`` (num_blocks, block_size, G) for float8 pools)."""
    B, _, H, D = q.shape
    assert q.shape[1] == 1 and q.stride(-1) == 1 and k_pool.stride(-1) == 1
    diff = (lambda_q1, lambda_k1, lambda_q2, lambda_k2, lambda_init, subln_weight, eps)
    return _decode(q, _pair_heads(k_pool), _pair_heads(v_pool), q_pos, None, None, None, D**-0.5, diff,
                   block_table, k_scale, v_scale).view(B, 1, -1)


@paged_diff_attention_triton.register_fake
def _(q, k_pool, v_pool, block_table, q_pos, k_scale, v_scale, lambda_q1, lambda_k1, lambda_q2, lambda_k2,
      lambda_init, subln_weight, eps):  # type: ignore[no-untyped-def]
    return q.new_empty(q.shape[0], 1, q.shape[2] * q.shape[3])
