"""Kernel-by-kernel timeline of one compiled, graph-captured batch-1 decode step (official shapes,
random bf16 weights), for each model: every kernel with its duration and the gap before it, and a
summary by kind (GEMV, decode attention, Mamba, the rest). Needs a CUDA GPU.

    python examples/profile_decode.py --out prof_out [--context 2048] [--models dense,sambay]

Writes OUT/timeline_<model>.txt and prints the summary. With programmatic dependent launch a
kernel starts before the previous one ends, so gaps can be negative and durations overlap:
the step's span, not the sum of durations, is its time. The median replay time also counts the
host's share of a replay; on the H100, the model profiled second in a process measured 0.15-0.2 ms
above its GPU span (the harness, examples/compare_latency.py, showed no such effect), so profile
one model per process where its step time matters.
"""

from __future__ import annotations

import argparse
import collections
import gc
import statistics
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from sambay.bench import build, decode_step, engine_for, timed


def kind_of(name: str) -> str:
    n = name.lower()
    if n.startswith("_gemv"):
        return "gemv"
    if n.startswith(("_partial", "_combine")):
        return "attention"
    if any(s in n for s in ("selective", "causal_conv1d", "state_update", "_ssm_step")):
        return "mamba"
    if n.startswith("_rotary_store"):
        return "rope+cache"
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--context", type=int, default=2048, help="tokens in the cache before the profiled step")
    ap.add_argument("--capacity", type=int, default=34816, help="tokens the K/V pool holds (the block table width)")
    ap.add_argument("--models", default="dense,sambay")
    ap.add_argument("--no-compile", action="store_true", help="CUDA graphs only (no torch.compile of the step)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    for kind in args.models.split(","):
        model = build(kind, "official", "cuda", torch.bfloat16)
        engine = engine_for(model, 1, args.capacity, compile=not args.no_compile)
        step = decode_step(engine, engine.place([args.context]))  # the cache placed at --context tokens
        step()
        median_ms = 1e3 * statistics.median(timed(step, dev, 50))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
            torch.cuda.synchronize()
        events = sorted((e for e in prof.events() if e.device_type.name == "CUDA"), key=lambda e: e.time_range.start)
        n = len(events) // 3
        one = events[n:2 * n]  # the middle step of three
        per = collections.defaultdict(lambda: [0, 0.0])
        lines, prev_end = [], one[0].time_range.start
        for e in one:
            dur, gap = e.time_range.end - e.time_range.start, e.time_range.start - prev_end
            prev_end = e.time_range.end
            per[kind_of(e.name)][0] += 1
            per[kind_of(e.name)][1] += dur
            lines.append(f"{kind_of(e.name):10s} {dur:8.2f} us  gap {gap:6.2f}  {e.name[:100]}")
        (out / f"timeline_{kind}.txt").write_text("\n".join(lines) + "\n")
        span = one[-1].time_range.end - one[0].time_range.start
        print(f"{kind}: step {median_ms:.3f} ms (median of 50 graph replays), {n} kernels, profiled span {span:.0f} us")
        for k, (count, busy) in sorted(per.items(), key=lambda kv: -kv[1][1]):
            print(f"   {k:10s} {count:4d} kernels {busy:8.1f} us")
        model = engine = step = None  # free the first model before building the second
        gc.collect()
        torch._dynamo.reset()
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
