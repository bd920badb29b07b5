"""Batch-1 matrix-vector products on the GPU: for every weight shape of both models in the official
sizes, with the norm / gate / residual each carries in the model, the unfused torch ops (norm
module, F.linear on cuBLAS, activation, residual add) against the fused Triton GEMV
(layers/gemv_triton.py) on bf16 weights and on fp8 weights (layers/quant.py), and the per-step
totals against the floor at the memory bandwidth measured in the same run.

    python examples/bench_gemv.py --out bench_out            # writes bench_out/gemv.json, prints tables
    python examples/bench_gemv.py --out bench_out --tune     # first sweeps the tiles of every shape
    python examples/bench_gemv.py --out bench_out --rows 8,64,512   # also fp8 at several rows

Each shape is timed as a CUDA graph over enough weight copies (>= 256 MB) that the L2 cache holds
none of them, so the number is the streaming rate a decode step sees. Mamba's x_proj and dt_proj
run as the model runs them, as one chain (a split-K pass over x_proj, then dt_proj adding its
partial rows: ``layers.gemv_triton.chain``); their rows show the chain's time, once, and beside it
the two plain GEMVs it replaced. The bandwidth is measured first (``sambay.bench.measure_bandwidth``:
a device-to-device copy, bytes read + written); the floors are bytes over it. The tiles each shape uses are
printed: the device's swept cache (``SAMBAY_GEMV_CACHE``), else its built-in table, else the
H100's. ``--tune`` sweeps every shape of both models in bf16 and fp8 first (``layers.gemv_triton
.tune``: minutes, once per device; the cache file keeps the result) and prints the table to paste
into ``TUNED_BY_DEVICE``. ``--rows`` times, for fp8 weights and M > 1 rows, the two ways
``SAMBAY_FP8_GEMM`` chooses between (dequantize-then-GEMM, ``torch._scaled_mm``) against the
bf16 GEMM, to pick the default.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

import layers.backends as backends
import layers.gemv_triton as gt
from layers.linear import linear, linear_ref
from layers.norm import RMSNorm, fused_norm_args
from layers.quant import quantize_fp8
from sambay.bench import measure_bandwidth

# name: (N, K, bias, fused gate, norm before, epilogue, uses per decode step); N counts output rows
SHAPES = {
    "sambay mamba in_proj": (10240, 2560, False, False, "layer", None, 9),
    "sambay mamba x_proj": (192, 5120, False, False, None, None, 9),
    "sambay mamba dt_proj": (5120, 160, False, False, None, None, 9),
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
CHAIN = ("sambay mamba x_proj", "sambay mamba dt_proj")  # run as one chain in the model (rank 160)
MIN_BYTES = 256 * 2**20


def tune_keys() -> list[gt.Key]:
    keys = []
    for name, (N, K, bias, glu, norm_kind, epilogue, count) in SHAPES.items():
        for fp8 in (False, True):
            kind = "split" if name == CHAIN[0] else "gemv"
            keys.append((N, K, glu, norm_kind is not None, fp8, kind))
            if name in CHAIN:  # the plain GEMVs too, for the comparison
                keys.append((N, K, glu, norm_kind is not None, fp8, "gemv"))
    return sorted(set(keys))


def bench_shape(name: str, spec: tuple, dev: torch.device) -> dict:  # type: ignore[type-arg]
    N, K, bias, glu, norm_kind, epilogue, count = spec
    bf16 = torch.bfloat16
    rows_w = 2 * N if glu else N
    nbytes = {"bf16": rows_w * K * 2, "fp8": rows_w * K + rows_w * 2}  # fp8: the weight and its bf16 scales
    norm = None
    if norm_kind == "layer":
        norm = nn.LayerNorm(K, device=dev, dtype=bf16)
    elif norm_kind == "rms":
        norm = RMSNorm(K).to(dev, bf16)
    x = torch.randn(1, 1, K, device=dev, dtype=torch.float32 if norm_kind == "layer" else bf16)
    gate = torch.randn(N, device=dev, dtype=bf16) if epilogue == "gate" else None
    res = None
    if epilogue is not None and epilogue.startswith("residual"):
        res = torch.randn(N, device=dev, dtype=torch.float32 if epilogue.endswith("fp32") else bf16)
    norm_args = fused_norm_args(norm) if norm is not None else None
    row: dict = {"N": N, "K": K, "bias": bias, "glu": glu, "norm": norm_kind, "epilogue": epilogue,
                 "per_step": count, "bytes_bf16": nbytes["bf16"], "bytes_fp8": nbytes["fp8"]}
    for fmt in ("bf16", "fp8"):
        copies = max(2, -(-MIN_BYTES // nbytes[fmt]))
        ws = []
        for _ in range(copies):
            w = torch.randn(rows_w, K, device=dev, dtype=bf16) * 0.02
            b = torch.randn(rows_w, device=dev, dtype=bf16) if bias else None
            q, s = quantize_fp8(w) if fmt == "fp8" else (w, None)
            ws.append((q, s, b))
        del w
        with torch.no_grad():
            q, s, b = ws[0]
            out = gt.gemv(x, q, b, glu, norm_args, gate, res, scale=s).float()
            ref = linear_ref(x, q, b, scale=s, glu=glu, norm=norm, gate=gate, residual=res).float()
            assert ((out - ref).norm() / ref.norm()) < 1e-2, (name, fmt)
            fused = gt.graph_seconds([lambda q=q, s=s, b=b: gt.gemv(x, q, b, glu, norm_args, gate, res, scale=s)
                                      for q, s, b in ws]) / copies
            row[f"{fmt}_us"] = 1e6 * fused
            row[f"{fmt}_config"] = gt.gemv_config(N, K, glu, norm is not None, fmt == "fp8")
            if fmt == "bf16":  # the unfused torch ops, for reference
                row["torch_us"] = 1e6 * gt.graph_seconds(
                    [lambda q=q, b=b: linear_ref(x, q, b, glu=glu, norm=norm, gate=gate, residual=res)
                     for q, s, b in ws]) / copies
        del ws
    return row


def bench_chain(dev: torch.device) -> dict:  # type: ignore[type-arg]
    """x_proj then dt_proj as the chain, per format, over weight-pair copies."""
    (N1, K1, *_), (N2, K2, *_) = SHAPES[CHAIN[0]], SHAPES[CHAIN[1]]
    bf16 = torch.bfloat16
    row: dict = {}
    x = torch.randn(1, K1, device=dev, dtype=bf16)
    for fmt in ("bf16", "fp8"):
        pair_bytes = (N1 * K1 + N2 * K2) * (1 if fmt == "fp8" else 2)
        copies = max(2, -(-MIN_BYTES // pair_bytes))
        pairs = []
        for _ in range(copies):
            w1 = torch.randn(N1, K1, device=dev, dtype=bf16) * 0.02
            w2 = torch.randn(N2, K2, device=dev, dtype=bf16) * 0.1
            pairs.append((quantize_fp8(w1), quantize_fp8(w2)) if fmt == "fp8" else ((w1, None), (w2, None)))
        with torch.no_grad():
            row[f"{fmt}_us"] = 1e6 * gt.graph_seconds(
                [lambda a=a, c=c: gt.chain(x, a[0], c[0], K2, a[1], c[1]) for a, c in pairs]) / copies
        row[f"{fmt}_config"] = (gt.gemv_config(N1, K1, fp8=fmt == "fp8", kind="split"),
                                gt.gemv_config(N2, K2, fp8=fmt == "fp8"))
        del pairs
    return row


def bench_rows(rows_list: list[int], dev: torch.device) -> list[dict]:  # type: ignore[type-arg]
    """M rows through the mid-size shapes: bf16 GEMM, fp8 dequantize-then-GEMM, fp8 _scaled_mm."""
    out = []
    bf16 = torch.bfloat16
    for name in ("sambay mlp fc1+gate", "sambay mlp fc2", "dense gate_up+gate", "dense down_proj"):
        N, K, bias, glu, norm_kind, epilogue, count = SHAPES[name]
        rows_w = 2 * N if glu else N
        copies = max(2, -(-MIN_BYTES // (rows_w * K * 2)))
        ws = [torch.randn(rows_w, K, device=dev, dtype=bf16) * 0.02 for _ in range(copies)]
        qs = [quantize_fp8(w) for w in ws]
        for m in rows_list:
            x = torch.randn(m, K, device=dev, dtype=bf16)
            res = {"shape": name, "rows": m}
            with torch.no_grad():
                res["bf16_us"] = 1e6 * gt.graph_seconds([lambda w=w: linear(x, w, glu=glu) for w in ws]) / copies
                for mode in ("dequant", "scaled_mm"):
                    with backends.use(fp8_gemm=mode):
                        res[f"fp8_{mode}_us"] = 1e6 * gt.graph_seconds(
                            [lambda q=q, s=s: linear(x, q, scale=s, glu=glu) for q, s in qs]) / copies
            out.append(res)
            print(f"{name:22s} M={m:<4} bf16 {res['bf16_us']:8.1f} us  fp8 dequant {res['fp8_dequant_us']:8.1f} us  "
                  f"fp8 scaled_mm {res['fp8_scaled_mm_us']:8.1f} us", flush=True)
        del ws, qs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tune", action="store_true", help="sweep the tiles of every shape first (minutes)")
    ap.add_argument("--rows", default="", help="comma-separated row counts for the fp8 several-row comparison")
    args = ap.parse_args()
    dev = torch.device("cuda")
    device_name = torch.cuda.get_device_name()
    copy_bw = measure_bandwidth(dev)  # bytes/s read + written, this device, now: the floors' bandwidth
    print(f"{device_name}: copy bandwidth {copy_bw / 1e12:.3f} TB/s (read + written)", flush=True)
    report: dict = {"device": device_name, "torch": torch.__version__, "copy_bandwidth_bytes_per_s": copy_bw}
    if args.tune:
        results = {}
        for key in tune_keys():  # one at a time, printed: the cache file keeps what is done if time runs out
            results.update(gt.tune([key], dev))
            cfg, seconds = results[gt.key_text(key)]
            print(f"  swept {gt.key_text(key):28s} -> {tuple(cfg)} {1e6 * seconds:7.1f} us", flush=True)
        report["tuned"] = {k: {"config": list(c), "us": 1e6 * t} for k, (c, t) in results.items()}
        print(f"swept {len(results)} shapes into {gt.cache_path(device_name)}; for TUNED_BY_DEVICE:")
        print(json.dumps({device_name: {k: list(c) for k, (c, t) in sorted(results.items())}}, indent=1))
    print(f"tile source: cache {gt.cache_path(device_name)} "
          f"({len(gt._swept_table(device_name))} shapes), built-in table for this device: "
          f"{device_name in gt.TUNED_BY_DEVICE}", flush=True)
    rows = {}
    for name, spec in SHAPES.items():
        row = bench_shape(name, spec, dev)
        rows[name] = row
        print(f"{name:22s} {row['N']:>6} x {row['K']:<5} torch {row['torch_us']:7.1f} us | "
              f"bf16 {row['bf16_us']:7.1f} us {row['bytes_bf16'] / row['bf16_us'] / 1e6:4.2f} TB/s "
              f"{tuple(row['bf16_config'])} | fp8 {row['fp8_us']:7.1f} us "
              f"{row['bytes_fp8'] / row['fp8_us'] / 1e6:4.2f} TB/s {tuple(row['fp8_config'])} | "
              f"floor bf16 {1e6 * row['bytes_bf16'] / copy_bw:6.1f} fp8 {1e6 * row['bytes_fp8'] / copy_bw:6.1f} us",
              flush=True)
    chain = bench_chain(dev)
    report["chain"] = chain
    pair = {fmt: rows[CHAIN[0]][f"{fmt}_us"] + rows[CHAIN[1]][f"{fmt}_us"] for fmt in ("bf16", "fp8")}
    print(f"sambay x_proj -> dt_proj chain: bf16 {chain['bf16_us']:.1f} us {chain['bf16_config']} "
          f"(two GEMVs {pair['bf16']:.1f} us), fp8 {chain['fp8_us']:.1f} us {chain['fp8_config']} "
          f"(two GEMVs {pair['fp8']:.1f} us)", flush=True)
    totals = {}
    for model in ("sambay", "dense"):
        sel = {k: r for k, r in rows.items() if k.startswith(model)}
        t = {"torch_ms": sum(r["torch_us"] * r["per_step"] for r in sel.values()) / 1e3}
        for fmt in ("bf16", "fp8"):
            gb = sum(r[f"bytes_{fmt}"] * r["per_step"] for r in sel.values()) / 1e9
            us = sum(r[f"{fmt}_us"] * r["per_step"] for k, r in sel.items() if k not in CHAIN)
            if model == "sambay":  # the model runs x_proj and dt_proj as the chain
                us += chain[f"{fmt}_us"] * SHAPES[CHAIN[0]][-1]
            t.update({f"{fmt}_gb": gb, f"{fmt}_ms": us / 1e3, f"{fmt}_floor_ms": 1e3 * gb * 1e9 / copy_bw})
        totals[model] = t
        print(f"{model}: weights per decode step bf16 {t['bf16_gb']:.2f} GB -> fused {t['bf16_ms']:.3f} ms, floor "
              f"{t['bf16_floor_ms']:.3f} ms ({t['bf16_ms'] / t['bf16_floor_ms']:.2f}x) | fp8 {t['fp8_gb']:.2f} GB -> "
              f"{t['fp8_ms']:.3f} ms, floor {t['fp8_floor_ms']:.3f} ms ({t['fp8_ms'] / t['fp8_floor_ms']:.2f}x) | "
              f"unfused torch bf16 {t['torch_ms']:.3f} ms", flush=True)
    report.update({"shapes": rows, "totals": totals})
    if args.rows:
        report["rows"] = bench_rows([int(m) for m in args.rows.split(",")], dev)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gemv.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
