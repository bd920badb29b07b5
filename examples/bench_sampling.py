"""What sampling a token costs per decode step, by batch size, at the official vocabulary (200064).

    python examples/bench_sampling.py --out bench_out          # on a GPU: CUDA-graph replays
    python examples/bench_sampling.py --out /tmp/s --device cpu --vocab 32000 --batch-sizes 1,8

The engine samples on the device (``sambay.engine.sampling.sample``: softmax, a sort of the whole
vocabulary per row, two cumulative sums, a search), every row of every step, greedy or not. A
sort of B x 200064 probabilities grows with the batch like the K/V reads do, and other servers
measured a full-vocabulary sort at 115 ms for 2048 x 262144 (vLLM pull request 32234). This
prints, per batch size, the whole sampler (``sample_with_flag``, as a decode step runs it) and its
parts: the softmax, the sort, and for comparison ``torch.topk`` of 1024 candidates (what a sampler
that sorts only a candidate window would pay). Writes ``sampling.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from sambay.bench import timed  # noqa: E402
from sambay.engine.runner import sample_with_flag  # noqa: E402


def seconds(fn, device: torch.device) -> float:  # type: ignore[no-untyped-def]
    """Median seconds of one call: a CUDA-graph replay on a GPU, wall time on a CPU (after a warm-up)."""
    if device.type == "cuda":
        from layers.gemv_triton import graph_seconds

        return graph_seconds([fn])
    fn()
    return statistics.median(timed(fn, device, 5))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vocab", type=int, default=200064)
    ap.add_argument("--batch-sizes", default="1,16,64,256")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    rows = []
    print(f"{'batch':>5}  {'sampler ms':>10}  {'softmax ms':>10}  {'sort ms':>8}  {'topk 1024 ms':>12}", flush=True)
    for B in (int(b) for b in args.batch_sizes.split(",")):
        logits = torch.randn(B, args.vocab, device=dev, dtype=torch.bfloat16) * 3
        temperature = torch.full((B,), 0.6, device=dev)
        top_p = torch.full((B,), 0.95, device=dev)
        top_k = torch.zeros(B, dtype=torch.long, device=dev)
        u = torch.rand(B, device=dev)
        probs = torch.softmax(logits.float() / 0.6, dim=-1)
        row = {
            "batch": B,
            "sampler_ms": 1e3 * seconds(lambda: sample_with_flag(logits, temperature, top_p, top_k, u), dev),
            "softmax_ms": 1e3 * seconds(lambda: torch.softmax(logits.float() / 0.6, dim=-1), dev),
            "sort_ms": 1e3 * seconds(lambda: probs.sort(dim=-1, descending=True), dev),
            "topk_1024_ms": 1e3 * seconds(lambda: probs.topk(min(1024, args.vocab), dim=-1), dev),
        }
        rows.append(row)
        print(f"{B:5d}  {row['sampler_ms']:10.3f}  {row['softmax_ms']:10.3f}  {row['sort_ms']:8.3f}  "
              f"{row['topk_1024_ms']:12.3f}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    (out / "sampling.json").write_text(json.dumps({"device": name, "vocab": args.vocab, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
