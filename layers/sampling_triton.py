"""Top-k / top-p sampling without a sort: a few passes over each row of logits.

A sort of the whole vocabulary per row per step (200064 at the official shapes) costs more than
the rest of the sampler together and grows with the batch; what top-p needs from it is only the
threshold below which tokens are dropped. Here that threshold is searched for directly. With
``e = exp((logit - max) / T)`` (the unnormalized probabilities, the largest exactly 1), token i is
kept when the tokens strictly more likely than it hold less than ``top_p`` of the mass and are
fewer than ``top_k``. Both sums fall as a threshold ``x`` grows, so the kept tokens are those with
``e >= x*``, ``x*`` the smallest ``x`` at which both hold; as floats in [0, 1] order like their
bit patterns, ``x*`` is found by a 15-way search over the 2**30 patterns: 8 passes, each summing
the mass and count above 15 candidates in one read of the row.

A row is cut into fixed chunks of ``CHUNK`` tokens, one program per (row, chunk) in a pass; each
program sums its chunk and the next pass adds the chunks' sums in index order, so every number a
row sees is the same alone or in any batch. Launches: the row maxima, 8 search passes, the kept
mass per chunk, then one program per row draws the token by inverse CDF in index order (the first
token whose running kept mass passes ``u`` times the total). Reference twin:
:func:`layers.sampling.sample_ref` (the same rule through a sort).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 8192  # tokens per program; fixed, so the sums do not depend on the batch
SUB = 512  # tokens per step inside a chunk: (SUB, 16) tiles of compares
PASSES = 8  # 15-way search: 2**30 bit patterns of [0, 1] -> one in 8 passes
ONE = tl.constexpr(0x3F800000)  # the bits of 1.0
# layers.sampling's LOG2E and MIN_TEMPERATURE (that module imports this one lazily, not back)
_LOG2E = tl.constexpr(1.4426950408889634)
_MIN_T = tl.constexpr(1e-6)


@triton.jit
def _row_setup(MAX, T, b, C, CP: tl.constexpr):
    """The row's largest logit (over its chunks' maxima) and the scale of ``exp2((l - m) * scale)``."""
    c = tl.arange(0, CP)
    m = tl.max(tl.load(MAX + b * C + c, mask=c < C, other=-float("inf")), 0)
    t = tl.load(T + b)
    # below 1e-6 (a tiny temperature would overflow the scale) the distribution is the argmax's anyway
    scale = tl.math.div_rn(_LOG2E, tl.maximum(tl.where(t > 0, t, 1.0), _MIN_T))
    return m, scale


@triton.jit
def _e(LOGITS, b, stride, idx, V, m, scale):
    """The row's unnormalized probabilities at ``idx`` (0 outside the vocabulary)."""
    x = tl.load(LOGITS + b.to(tl.int64) * stride + idx, mask=idx < V, other=-float("inf")).to(tl.float32)
    return tl.where(idx < V, tl.exp2((x - m) * scale), 0.0)


@triton.jit
def _candidates(lo, hi):
    """Slot 0: below every value (the row's total mass); slots 1..15: lo, lo + step, ... (< hi)."""
    j = tl.arange(0, 16)
    step = (hi - lo + 14) // 15
    c = tl.minimum(lo + (j - 1) * step, hi - 1)
    return j, c


@triton.jit
def _narrow(STATE, MASS, COUNT, TOP_P, TOP_K, b, C, V, prev, CP: tl.constexpr):
    """(lo, hi) after pass ``prev``: from that pass's interval and its chunk sums."""
    lo = tl.load(STATE + (prev * tl.num_programs(0) + b) * 2)
    hi = tl.load(STATE + (prev * tl.num_programs(0) + b) * 2 + 1)
    if lo < hi:
        j, cand = _candidates(lo, hi)
        c = tl.arange(0, CP)
        off = ((prev * tl.num_programs(0) + b) * C + c[:, None]) * 16 + j[None, :]
        mask = (c[:, None] < C) & (j[None, :] >= 0)
        mass = tl.sum(tl.load(MASS + off, mask=mask, other=0.0), 0)
        count = tl.sum(tl.load(COUNT + off, mask=mask, other=0), 0)
        total = tl.sum(tl.where(j == 0, mass, 0.0), 0)
        top_k = tl.load(TOP_K + b)
        k = tl.where(top_k > 0, top_k, V + 1)
        ok = (mass < tl.load(TOP_P + b) * total) & (count < k)  # rising in the candidate
        real = j > 0
        hi = tl.minimum(hi, tl.min(tl.where(real & ok, cand, hi), 0))
        lo = tl.maximum(lo, tl.max(tl.where(real & ~ok, cand + 1, lo), 0))
    return lo, hi


@triton.jit
def _max_pass(LOGITS, MAX, ARG, BAD, stride, V, C, CHUNK: tl.constexpr, SUB: tl.constexpr):
    """Per (row, chunk): the largest logit, its first index, and whether any logit is not finite."""
    b, chunk = tl.program_id(0), tl.program_id(1)
    best = tl.full((SUB,), -float("inf"), tl.float32)
    where = tl.zeros((SUB,), tl.int32)
    bad = tl.zeros((SUB,), tl.int32)
    for s in range(0, CHUNK, SUB):
        idx = chunk * CHUNK + s + tl.arange(0, SUB)
        x = tl.load(LOGITS + b.to(tl.int64) * stride + idx, mask=idx < V, other=-float("inf")).to(tl.float32)
        bad |= ((idx < V) & ~((x == x) & (tl.abs(x) < float("inf")))).to(tl.int32)
        take = x > best  # strictly: the first index of the largest stays
        where = tl.where(take, idx, where)
        best = tl.where(take, x, best)
    m = tl.max(best, 0)
    arg = tl.min(tl.where(best == m, where, 2147483647), 0)
    tl.store(MAX + b * C + chunk, m)
    tl.store(ARG + b * C + chunk, arg)
    tl.store(BAD + b * C + chunk, tl.max(bad, 0))


@triton.jit
def _search_pass(LOGITS, MAX, T, TOP_P, TOP_K, STATE, MASS, COUNT, stride, V, C, k, FIRST: tl.constexpr,
                 CHUNK: tl.constexpr, SUB: tl.constexpr, CP: tl.constexpr):
    """Pass ``k``: narrow the row's interval by pass k-1's sums, then sum this chunk's mass and
    count above the new candidates."""
    b, chunk = tl.program_id(0), tl.program_id(1)
    if FIRST:
        t, top_p, top_k = tl.load(T + b), tl.load(TOP_P + b), tl.load(TOP_K + b)
        hi = tl.where((t > 0) & ((top_p < 1.0) | (top_k > 0)), ONE, 0)  # greedy or keep-all: done
        lo = hi * 0
    else:
        lo, hi = _narrow(STATE, MASS, COUNT, TOP_P, TOP_K, b, C, V, k - 1, CP)
    if chunk == 0:
        tl.store(STATE + (k * tl.num_programs(0) + b) * 2, lo)
        tl.store(STATE + (k * tl.num_programs(0) + b) * 2 + 1, hi)
    if lo < hi:
        m, scale = _row_setup(MAX, T, b, C, CP)
        j, cand = _candidates(lo, hi)
        x = tl.where(j == 0, -1.0, cand.to(tl.float32, bitcast=True))[:, None]
        off = ((k * tl.num_programs(0) + b) * C + chunk) * 16 + j
        start = chunk * CHUNK
        if tl.load(TOP_K + b) > 0:
            mass, count = _sums(LOGITS, b, stride, start, V, m, scale, x, True, CHUNK, SUB)
        else:  # top-p alone: the counts are not needed
            mass, count = _sums(LOGITS, b, stride, start, V, m, scale, x, False, CHUNK, SUB)
        tl.store(MASS + off, mass)
        tl.store(COUNT + off, count)


@triton.jit
def _sums(LOGITS, b, stride, start, V, m, scale, x, COUNTS: tl.constexpr, CHUNK: tl.constexpr, SUB: tl.constexpr):
    """The mass and count of the chunk's tokens above each threshold of ``x`` (16, 1). Candidates
    along the first axis and tokens along the second, loaded in that 2-D layout: each thread holds
    every candidate of its tokens, so the comparisons need no exchange between threads."""
    mass = tl.zeros((16, SUB), tl.float32)
    count = tl.zeros((16, SUB), tl.int32)
    for s in range(0, CHUNK, SUB):
        e = _e(LOGITS, b, stride, start + s + tl.arange(0, SUB)[None, :], V, m, scale)  # (1, SUB)
        above = e > x
        mass += tl.where(above, e, 0.0)
        if COUNTS:
            count += above.to(tl.int32)
    return tl.sum(mass, 1), tl.sum(count, 1)


@triton.jit
def _kept_pass(LOGITS, MAX, T, TOP_P, TOP_K, STATE, MASS, COUNT, KEPT, stride, V, C,
               PASSES: tl.constexpr, CHUNK: tl.constexpr, SUB: tl.constexpr, CP: tl.constexpr):
    """The threshold after the last pass, and the mass this chunk keeps (tokens with e >= it)."""
    b, chunk = tl.program_id(0), tl.program_id(1)
    _, hi = _narrow(STATE, MASS, COUNT, TOP_P, TOP_K, b, C, V, PASSES - 1, CP)
    if chunk == 0:
        tl.store(STATE + (PASSES * tl.num_programs(0) + b) * 2 + 1, hi)
    if tl.load(T + b) > 0:
        m, scale = _row_setup(MAX, T, b, C, CP)
        x = hi.to(tl.float32, bitcast=True)
        kept = tl.zeros((SUB,), tl.float32)
        for s in range(0, CHUNK, SUB):
            e = _e(LOGITS, b, stride, chunk * CHUNK + s + tl.arange(0, SUB), V, m, scale)
            kept += tl.where(e >= x, e, 0.0)
        tl.store(KEPT + b * C + chunk, tl.sum(kept, 0))


@triton.jit
def _pick(LOGITS, MAX, ARG, BAD, T, U, STATE, KEPT, OUT, stride, V, C,
          PASSES: tl.constexpr, CHUNK: tl.constexpr, SUB: tl.constexpr, CP: tl.constexpr):
    """Per row: the argmax (temperature 0), else the first token whose running kept mass in index
    order passes ``u`` times the total; and the not-finite flag."""
    b = tl.program_id(0)
    c = tl.arange(0, CP)
    maxima = tl.load(MAX + b * C + c, mask=c < C, other=-float("inf"))
    m = tl.max(maxima, 0)
    first = tl.min(tl.where(maxima == m, c, CP), 0)  # the first chunk holding the largest logit
    token = tl.load(ARG + b * C + tl.minimum(first, C - 1))
    t = tl.load(T + b)
    if t > 0:
        _, scale = _row_setup(MAX, T, b, C, CP)
        kept = tl.load(KEPT + b * C + c, mask=c < C, other=0.0)
        running = tl.cumsum(kept, 0)
        target = tl.load(U + b) * tl.sum(kept, 0)
        # the chunk where the running mass passes the target; past the end (rounding): the last
        # chunk that keeps anything
        passed = (running > target) & (c < C)
        chunk = tl.where(tl.max(passed.to(tl.int32), 0) > 0, tl.min(tl.where(passed, c, CP), 0),
                         tl.max(tl.where((kept > 0) & (c < C), c, 0), 0))
        local = target - tl.sum(tl.where(c < chunk, kept, 0.0), 0)
        x = tl.load(STATE + (PASSES * tl.num_programs(0) + b) * 2 + 1).to(tl.float32, bitcast=True)
        carry = local * 0
        found = token * 0 + 2147483647
        last = token * 0
        for s in range(0, CHUNK, SUB):
            idx = chunk * CHUNK + s + tl.arange(0, SUB)
            e = _e(LOGITS, b, stride, idx, V, m, scale)
            e = tl.where(e >= x, e, 0.0)
            run = carry + tl.cumsum(e, 0)
            found = tl.minimum(found, tl.min(tl.where((run > local) & (e > 0), idx, 2147483647), 0))
            last = tl.maximum(last, tl.max(tl.where(e > 0, idx, 0), 0))
            carry = carry + tl.sum(e, 0)
        token = tl.where(found < 2147483647, found, last)
    bad = tl.max(tl.load(BAD + b * C + c, mask=c < C, other=0), 0)
    tl.store(OUT + b * 2, tl.minimum(tl.maximum(token, 0), V - 1).to(tl.int64))
    tl.store(OUT + b * 2 + 1, bad.to(tl.int64))


@torch.library.custom_op("sambay::sample", mutates_args=())
def sample_triton(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor,
                  u: torch.Tensor) -> torch.Tensor:
    """:func:`layers.sampling.sample` on the GPU: logits (B, V) (unit last stride, any float dtype),
    temperature, top_p, u (B,) float32, top_k (B,) int64 -> (B, 2) int64: the token and a flag
    set where the row's logits are not all finite."""
    B, V = logits.shape
    assert logits.stride(-1) == 1 and temperature.dtype == top_p.dtype == u.dtype == torch.float32
    C = triton.cdiv(V, CHUNK)
    CP = triton.next_power_of_2(C)
    dev = logits.device
    maxima = torch.empty(B, C, device=dev, dtype=torch.float32)
    arg = torch.empty(B, C, device=dev, dtype=torch.int32)
    bad = torch.empty(B, C, device=dev, dtype=torch.int32)
    state = torch.empty(PASSES + 1, B, 2, device=dev, dtype=torch.int32)
    mass = torch.empty(PASSES, B, C, 16, device=dev, dtype=torch.float32)
    count = torch.empty(PASSES, B, C, 16, device=dev, dtype=torch.int32)
    kept = torch.empty(B, C, device=dev, dtype=torch.float32)
    out = torch.empty(B, 2, device=dev, dtype=torch.int64)
    temperature, top_p, top_k, u = (a.contiguous() for a in (temperature, top_p, top_k, u))
    s = logits.stride(0)
    _max_pass[(B, C)](logits, maxima, arg, bad, s, V, C, CHUNK=CHUNK, SUB=SUB, num_warps=4)
    for k in range(PASSES):
        _search_pass[(B, C)](logits, maxima, temperature, top_p, top_k, state, mass, count, s, V, C, k, k == 0,
                             CHUNK=CHUNK, SUB=SUB, CP=CP, num_warps=8)
    _kept_pass[(B, C)](logits, maxima, temperature, top_p, top_k, state, mass, count, kept, s, V, C,
                       PASSES=PASSES, CHUNK=CHUNK, SUB=SUB, CP=CP, num_warps=4)
    _pick[(B,)](logits, maxima, arg, bad, temperature, u, state, kept, out, s, V, C,
                PASSES=PASSES, CHUNK=CHUNK, SUB=SUB, CP=CP, num_warps=4)
    return out


@sample_triton.register_fake
def _(logits, temperature, top_p, top_k, u):  # type: ignore[no-untyped-def]
    return logits.new_empty(logits.shape[0], 2, dtype=torch.int64)
