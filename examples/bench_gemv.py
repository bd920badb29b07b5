"""Batch-1 matrix-vector products on the GPU: the unfused torch ops (norm module, F.linear on
cuBLAS, activation, residual add) against the fused Triton GEMV (layers/gemv_triton.py), for every
weight shape of both models in the official sizes, with the norm / gate / residual each carries
in the model.

    python examples/bench_gemv.py --out bench_out     # writes bench_out/gemv.json, prints a table

Each shape is timed as a CUDA graph over enough weight copies (>= 256 MB) that the L2 cache
holds none of them, so the number is the streaming rate a decode step sees. For shapes with a
norm, ``plain`` is the same GEMV fed an already-normalized input: the prologue's cost is the
difference. ``--sweep`` also tries a grid of tile configurations and reports the best (what
``gemv_config`` was fitted to).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from torch import nn

from layers.gemv_triton import gemv, gemv_config
from layers.linear import linear_ref
from layers.norm import fused_norm_args
from layers.norm import RMSNorm
from sambay.bench import measure_bandwidth

# name: (N, K, bias, fused gate, norm before, epilogue, uses per decode step); N counts output rows
SHAPES = {
    "sambay mamba in_proj": (10240, 2560, False, False, "layer", None, 9),
    "sambay mamba x_proj": (192, 5120, False, False, None, None, 9),
    "sambay mamba dt_proj": (5120, 160, True, False, None, None, 9),
    "sambay mamba out_proj": (2560, 5120, False, False, None, "residual fp32", 9),
    "sambay attn Wqkv": (5120, 2560, True, False, "layer", None, 9),
    "sambay attn out_proj": (2560, 2560, True, False, None, "residual fp32", 16),
    "sambay cross Wqkv": (2560, 2560, True, False, "layer", None, 7),
    "sambay gmu in_proj": (5120, 2560, False, False, "layer", "gate", 7),
    "sambay gmu out_proj": (2560, 5120, False, False, None, "residual fp32", 7),
    "sambay mlp fc1+gate": (10240, 2560, False, True, "layer", None, 32),
    "sambay mlp fc2": (2560, 10240, False, False, None, "residual fp32", 32),
    "sambay lm_head": (200064, 2560, False, False, "layer", None, 1),
    "dense qkv_proj": (5120, 3072, False, False, "rms", None, 32),
    "dense o_proj": (3072, 3072, False, False, None, "residual bf16", 32),
    "dense gate_up+gate": (8192, 3072, False, True, "rms", None, 32),
    "dense down_proj": (3072, 8192, False, False, None, "residual bf16", 32),
    "dense lm_head": (200064, 3072, False, False, "rms", None, 1),
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
    dev, bf16 = torch.device("cuda"), torch.bfloat16
    bandwidth = measure_bandwidth(dev)  # bytes/s, this device, now
    print(f"copy bandwidth: {bandwidth / 1e12:.3f} TB/s (read + written)")
    rows = {}
    for name, (N, K, bias, glu, norm_kind, epilogue, count) in SHAPES.items():
        rows_w = 2 * N if glu else N
        nbytes = rows_w * K * 2
        copies = max(2, -(-256 * 2**20 // nbytes))
        ws = [torch.randn(rows_w, K, device=dev, dtype=bf16) * 0.02 for _ in range(copies)]
        bs = [torch.randn(rows_w, device=dev, dtype=bf16) if bias else None for _ in range(copies)]
        norm = None
        if norm_kind == "layer":
            norm = nn.LayerNorm(K, device=dev, dtype=bf16)
        elif norm_kind == "rms":
            norm = RMSNorm(K).to(dev, bf16)
        x = torch.randn(1, 1, K, device=dev, dtype=torch.float32 if norm_kind == "layer" else bf16)
        x_normed = norm(x.to(bf16)).detach() if norm is not None else x
        gate = torch.randn(N, device=dev, dtype=bf16) if epilogue == "gate" else None
        res = None
        if epilogue is not None and epilogue.startswith("residual"):
            res = torch.randn(N, device=dev, dtype=torch.float32 if epilogue.endswith("fp32") else bf16)
        norm_args = fused_norm_args(norm) if norm is not None else None

        def torch_path(w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
            return linear_ref(x, w, b, glu=glu, norm=norm, gate=gate, residual=res)

        def triton_seconds(cfg: tuple[int, int, int] | None, fused: bool = True) -> float:
            if fused:
                out = gemv(x, ws[0], bs[0], glu, norm_args, gate, res, config=cfg).float()
                ref = torch_path(ws[0], bs[0]).float()
                assert ((out - ref).norm() / ref.norm()) < 1e-2, (name, cfg)
                fns = [lambda w=w, b=b: gemv(x, w, b, glu, norm_args, gate, res, config=cfg) for w, b in zip(ws, bs)]
            else:
                fns = [lambda w=w, b=b: gemv(x_normed, w, b, glu, config=cfg) for w, b in zip(ws, bs)]
            return graph_seconds(fns) / copies

        with torch.no_grad():
            t_torch = graph_seconds([lambda w=w, b=b: torch_path(w, b) for w, b in zip(ws, bs)]) / copies
            t_triton = triton_seconds(None)
            t_plain = triton_seconds(None, fused=False) if norm is not None else t_triton
            row = {"N": N, "K": K, "bias": bias, "glu": glu, "norm": norm_kind, "epilogue": epilogue,
                   "per_step": count, "bytes": nbytes, "torch_us": 1e6 * t_torch, "triton_us": 1e6 * t_triton,
                   "plain_us": 1e6 * t_plain, "config": gemv_config(N, K, glu, norm is not None)}
            if args.sweep:
                grid = {(bn, min(bk, 1 << (K - 1).bit_length()), nw)
                        for bn, bk, nw in itertools.product([2, 4, 8], [256, 512, 1024], [4, 8])}
                best = min((triton_seconds(cfg), cfg) for cfg in sorted(grid))
                row.update({"best_us": 1e6 * best[0], "best_config": best[1]})
        rows[name] = row
        best_txt = f" | best {row['best_us']:6.1f} us {row['best_config']}" if args.sweep else ""
        print(f"{name:22s} {N:>6} x {K:<5} {nbytes / 1e6:6.1f} MB  torch {row['torch_us']:6.1f} us  "
              f"fused {row['triton_us']:6.1f} us {nbytes / t_triton / 1e12:4.2f} TB/s  "
              f"plain {row['plain_us']:6.1f} us{best_txt}", flush=True)
    for model in ("sambay", "dense"):
        sel = [r for k, r in rows.items() if k.startswith(model)]
        gb = sum(r["bytes"] * r["per_step"] for r in sel) / 1e9
        ms = {key: sum(r[key] * r["per_step"] for r in sel) / 1e3 for key in ("torch_us", "triton_us", "plain_us")}
        print(f"{model}: {gb:.2f} GB of weights per decode step: torch {ms['torch_us']:.3f} ms, "
              f"fused triton {ms['triton_us']:.3f} ms, plain triton {ms['plain_us']:.3f} ms "
              f"({gb * 1e9 / bandwidth * 1e3:.3f} ms at the measured {bandwidth / 1e12:.2f} TB/s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gemv.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                               "copy_bandwidth_bytes_per_s": bandwidth, "shapes": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
