"""What sampling a token costs per decode step, by batch size, at the official vocabulary (200064).

    python examples/bench_sampling.py --out bench_out          # on a GPU: CUDA-graph replays
    python examples/bench_sampling.py --out /tmp/s --device cpu --vocab 32000 --batch-sizes 1,8

The engine samples on the device, every row of every step, greedy or not. Beside each other: the
sort-free kernel the engine runs (``layers.sampling.sample``: 11 launches, each a read of the
logits), its reference twin (``sample_ref``: a sort of the whole vocabulary per row, which grows
with the batch like the K/V reads do; other servers measured a full-vocabulary sort at 115 ms for
2048 x 262144, vLLM pull request 32234), and that twin's sort alone; both for sampled rows
(temperature 0.6, top-p 0.95) and greedy ones. Floor: one read of the bf16 logits at the
bandwidth measured in the same run. Writes ``sampling.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from layers.sampling import sample, sample_ref  # noqa: E402
from sambay.bench import measure_bandwidth, timed  # noqa: E402


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
    bandwidth = measure_bandwidth(dev) if dev.type == "cuda" else None
    rows = []
    head = ["batch", "kernel ms", "greedy ms", "sort ref ms", "greedy ref ms", "sort alone ms", "read floor ms"]
    print("  ".join(f"{h:>13}" for h in head), flush=True)
    for B in (int(b) for b in args.batch_sizes.split(",")):
        logits = torch.randn(B, args.vocab, device=dev, dtype=torch.bfloat16) * 3
        top_p = torch.full((B,), 0.95, device=dev)
        top_k = torch.zeros(B, dtype=torch.long, device=dev)
        u = torch.rand(B, device=dev)
        sampled, greedy = torch.full((B,), 0.6, device=dev), torch.zeros(B, device=dev)
        probs = torch.softmax(logits.float() / 0.6, dim=-1)
        row = {
            "batch": B,
            "kernel_ms": 1e3 * seconds(lambda: sample(logits, sampled, top_p, top_k, u), dev),
            "kernel_greedy_ms": 1e3 * seconds(lambda: sample(logits, greedy, top_p, top_k, u), dev),
            "sort_ref_ms": 1e3 * seconds(lambda: sample_ref(logits, sampled, top_p, top_k, u), dev),
            "sort_ref_greedy_ms": 1e3 * seconds(lambda: sample_ref(logits, greedy, top_p, top_k, u), dev),
            "sort_alone_ms": 1e3 * seconds(lambda: probs.sort(dim=-1, descending=True), dev),
            "read_floor_ms": 1e3 * logits.numel() * logits.element_size() / bandwidth if bandwidth else None,
        }
        rows.append(row)
        print("  ".join(f"{v:13.3f}" if isinstance(v, float) else f"{str(v):>13}" for v in row.values()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    (out / "sampling.json").write_text(json.dumps({"device": name, "vocab": args.vocab, "bandwidth": bandwidth, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
