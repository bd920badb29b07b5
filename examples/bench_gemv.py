"""Batch-1 matrix-vector products on the GPU: torch's F.linear (cuBLAS) against the Triton GEMV
(layers/gemv_triton.py), for every weight shape of both models in the official sizes.

    python examples/bench_gemv.py --out bench_out     # writes bench_out/gemv.json, prints a table

Each shape is timed as a CUDA graph over enough weight copies (>= 256 MB) that the L2 cache
holds none of them, so the number is the streaming rate a decode step sees. ``--sweep`` also
tries a grid of tile configurations and reports the best (what ``gemv_config`` was fitted to).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from layers.gemv_triton import gemv, gemv_config

# name: (N, K, bias, fused gate, uses per decode step)
SHAPES = {
    "sambay mamba in_proj": (10240, 2560, False, False, 9), "sambay mamba x_proj": (192, 5120, False, False, 9),
    "sambay mamba dt_proj": (5120, 160, True, False, 9), "sambay mamba out_proj": (2560, 5120, False, False, 9),
    "sambay attn Wqkv": (5120, 2560, True, False, 9), "sambay attn out_proj": (2560, 2560, True, False, 16),
    "sambay cross Wqkv": (2560, 2560, True, False, 7), "sambay gmu in_proj": (5120, 2560, False, False, 7),
    "sambay gmu out_proj": (2560, 5120, False, False, 7), "sambay mlp fc1+gate": (20480, 2560, False, True, 32),
    "sambay mlp fc2": (2560, 10240, False, False, 32), "sambay lm_head": (200064, 2560, False, False, 1),
    "dense qkv_proj": (5120, 3072, False, False, 32), "dense o_proj": (3072, 3072, False, False, 32),
    "dense gate_up+gate": (16384, 3072, False, True, 32), "dense down_proj": (3072, 8192, False, False, 32),
    "dense lm_head": (200064, 3072, False, False, 1),
}


def graph_seconds(fns: list, reps: int = 20) -> float:
    """Median seconds of one replay of a CUDA graph running ``fns`` in order."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for f in fns:
            f()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    return sorted(times)[reps // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sweep", action="store_true", help="also search a grid of tile configurations")
    args = ap.parse_args()
    rows = {}
    for name, (N, K, bias, glu, count) in SHAPES.items():
        nbytes = N * K * 2
        copies = max(2, -(-256 * 2**20 // nbytes))
        ws = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
        bs = [torch.randn(N, device="cuda", dtype=torch.bfloat16) if bias else None for _ in range(copies)]
        x = torch.randn(1, 1, K, device="cuda", dtype=torch.bfloat16)

        def torch_path(w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            y = F.linear(x, w, b)
            if glu:
                g, u = y.chunk(2, -1)
                y = u * F.silu(g)
            return y

        def triton_seconds(cfg: tuple[int, int, int] | None) -> float:
            out = gemv(x, ws[0], bs[0], glu=glu, config=cfg).float()
            ref = torch_path(ws[0], bs[0]).float()
            assert ((out - ref).norm() / ref.norm()) < 1e-2, (name, cfg)
            return graph_seconds([lambda w=w, b=b: gemv(x, w, b, glu=glu, config=cfg) for w, b in zip(ws, bs)]) / copies

        t_torch = graph_seconds([lambda w=w, b=b: torch_path(w, b) for w, b in zip(ws, bs)]) / copies
        t_triton = triton_seconds(None)
        row = {"N": N, "K": K, "bias": bias, "glu": glu, "per_step": count, "bytes": nbytes,
               "torch_us": 1e6 * t_torch, "triton_us": 1e6 * t_triton,
               "config": gemv_config(N // 2 if glu else N, K)}
        if args.sweep:
            grid = {(bn, min(bk, 1 << (K - 1).bit_length()), nw)
                    for bn, bk, nw in itertools.product([2, 4, 8, 16], [256, 512, 1024], [4, 8])}
            best = min((triton_seconds(cfg), cfg) for cfg in sorted(grid))
            row.update({"best_us": 1e6 * best[0], "best_config": best[1]})
        rows[name] = row
        best_txt = f" | best {row['best_us']:7.1f} us {row['best_config']}" if args.sweep else ""
        print(f"{name:24s} {N:>6} x {K:<6} {nbytes / 1e6:7.1f} MB  torch {row['torch_us']:7.1f} us "
              f"{nbytes / t_torch / 1e12:4.2f} TB/s  triton {row['triton_us']:7.1f} us "
              f"{nbytes / t_triton / 1e12:4.2f} TB/s{best_txt}", flush=True)
    for model in ("sambay", "dense"):
        sel = [r for k, r in rows.items() if k.startswith(model)]
        gb = sum(r["bytes"] * r["per_step"] for r in sel) / 1e9
        ms = {key: sum(r[key] * r["per_step"] for r in sel) / 1e3 for key in ("torch_us", "triton_us")}
        print(f"{model}: {gb:.2f} GB of weights per decode step: torch {ms['torch_us']:.3f} ms, "
              f"triton {ms['triton_us']:.3f} ms ({gb / 3.0:.3f} ms at 3.0 TB/s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gemv.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                               "shapes": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
