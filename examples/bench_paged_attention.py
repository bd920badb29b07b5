"""Decode attention on the GPU: the static-buffer kernel against the paged one (bf16 and fp8 K/V),
in both models' official head shapes, as the bandwidth each reaches reading the cache.

    python examples/bench_paged_attention.py --out bench_out   # writes bench_out/paged_attention.json, prints a table

For each (model, batch, context): ``static`` reads a (B, context, Hk, D) buffer (today's decode
kernel), ``paged`` the same keys through a block table of shuffled 16-slot blocks, ``paged fp8``
float8 pools with their scales (V in the cache's layout, a block's tokens contiguous), ``mixed``
paged rows of lengths drawn uniformly from 1..context, and ``skewed`` rows of 2K + a log-normal
length (median 8K, sigma 0.8), capped at the context, as a continuous batch holds (bytes counted
over the keys each row really has: blocks past a row's end are not read). SambaY's shape is its
differential attention (the layer-17 / cross-attention decode); the dense one plain GQA. Each is timed as a CUDA graph replay (the median of 20).

``--sweep`` also times the paged kernels (bf16 and fp8) under other launch configs (keys per
block, warps, pipeline stages) than ``layers.attention_triton.launch_config`` picks, to choose its
table; ``--sweep-splits 1,4,16`` times the paged, mixed and skewed rows with other numbers of programs
per (row, KV head) than ``num_splits`` picks; ``--pages 16,64`` repeats everything per block size.
"""

from __future__ import annotations

import argparse
import json
from unittest import mock
from pathlib import Path

import torch

import layers.attention_triton as at
from layers.attention import DiffAttnCore, quantize_kv_fp8, tokens_contiguous
from layers.gemv_triton import graph_seconds  # the same CUDA-graph timing as the GEMV benchmark
from layers.attention_triton import (
    decode_attention_triton,
    decode_diff_attention_triton,
    paged_attention_triton,
    paged_diff_attention_triton,
)

SWEEP = ((64, 4, 3), (128, 4, 3), (128, 8, 3), (128, 8, 4), (256, 8, 2))  # (keys, warps, stages)
MODELS = {"dense": (24, 8, 128, False), "sambay": (40, 20, 64, True)}  # query heads, KV heads, head dim, differential


def quantize_chunked(pool: torch.Tensor, blocks: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`quantize_kv_fp8` a few thousand blocks at a time: at 256 rows of 34K tokens the whole
    pool's float32 copy alone would not fit beside the bf16 buffers."""
    parts = [quantize_kv_fp8(pool[i:i + blocks]) for i in range(0, pool.shape[0], blocks)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def run(model: str, B: int, ctx: int, page: int, dev: torch.device, sweep: tuple = (), splits: tuple = ()) -> dict:
    Hq, Hk, D, diff = MODELS[model]
    bf16 = torch.bfloat16
    q = torch.randn(B, 1, Hq, D, device=dev, dtype=bf16)
    k = torch.randn(B, ctx, Hk, D, device=dev, dtype=bf16)
    v = torch.randn_like(k)
    q_pos = torch.full((B,), ctx - 1, device=dev)
    blocks = B * ctx // page
    table = torch.randperm(blocks, device=dev).int().view(B, ctx // page)
    # the static buffers' tokens, moved into the shuffled blocks: slot s of row b is in block table[b, s // page]
    k_pool = torch.empty(blocks, page, Hk, D, device=dev, dtype=bf16)
    v_pool = torch.empty_like(k_pool)
    k_pool[table.long()] = k.view(B, ctx // page, page, Hk, D)
    v_pool[table.long()] = v.view(B, ctx // page, page, Hk, D)
    (k8, ks), (v8, vs) = quantize_chunked(k_pool), quantize_chunked(v_pool)
    v8 = tokens_contiguous(v8)  # the cache's float8 V layout
    mixed_pos = torch.randint(0, ctx, (B,), device=dev)
    # a continuous batch's skew: a 2K prompt plus a log-normal output (median 8K, sigma 0.8), capped
    skewed_pos = (2048 + torch.exp(torch.randn(B, device=dev) * 0.8) * 8192).long().clamp(max=ctx - 1)
    core = DiffAttnCore(D, layer_idx=17).to(dev, bf16)
    lam = (core.lambda_q1, core.lambda_k1, core.lambda_q2, core.lambda_k2, core.lambda_init, core.subln.weight, 1e-5)

    if diff:
        fns = {
            "static": lambda: decode_diff_attention_triton(q, k, v, q_pos, None, None, None, *lam),
            "paged": lambda: paged_diff_attention_triton(q, k_pool, v_pool, table, q_pos, None, None, *lam),
            "paged fp8": lambda: paged_diff_attention_triton(q, k8, v8, table, q_pos, ks, vs, *lam),
            "mixed": lambda: paged_diff_attention_triton(q, k_pool, v_pool, table, mixed_pos, None, None, *lam),
            "skewed": lambda: paged_diff_attention_triton(q, k_pool, v_pool, table, skewed_pos, None, None, *lam),
        }
    else:
        fns = {
            "static": lambda: decode_attention_triton(q, k, v, q_pos),
            "paged": lambda: paged_attention_triton(q, k_pool, v_pool, table, q_pos),
            "paged fp8": lambda: paged_attention_triton(q, k8, v8, table, q_pos, None, None, ks, vs),
            "mixed": lambda: paged_attention_triton(q, k_pool, v_pool, table, mixed_pos),
            "skewed": lambda: paged_attention_triton(q, k_pool, v_pool, table, skewed_pos),
        }
    per_token = {name: 2 * Hk * D * 2 for name in fns}  # bytes of one token's K and V
    per_token["paged fp8"] = 2 * Hk * D + 2 * Hk * 4  # one byte per element, a float32 scale per (token, head)
    tokens = {"static": B * ctx, "paged": B * ctx, "paged fp8": B * ctx, "mixed": int((mixed_pos + 1).sum()),
              "skewed": int((skewed_pos + 1).sum())}
    out = {}
    for name, fn in fns.items():
        seconds = graph_seconds([fn])
        out[name] = {"ms": seconds * 1e3, "TB/s": tokens[name] * per_token[name] / seconds / 1e12,
                     "tokens": tokens[name]}
    for cfg in sweep:
        for name in ("paged", "paged fp8"):
            with mock.patch.object(at, "launch_config", lambda *_, c=cfg: c):
                seconds = graph_seconds([fns[name]])
            out[f"{name} {cfg}"] = {"ms": seconds * 1e3, "TB/s": B * ctx * per_token[name] / seconds / 1e12,
                                    "tokens": B * ctx}
    for n in splits:  # programs per (row, KV head): rows of one length, and of different lengths
        for name in ("paged", "mixed", "skewed"):
            with mock.patch.object(at, "num_splits", lambda *_, n=n, **__: n):
                seconds = graph_seconds([fns[name]])
            out[f"{name} splits={n}"] = {"ms": seconds * 1e3, "TB/s": tokens[name] * per_token[name] / seconds / 1e12,
                                         "tokens": tokens[name]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-sizes", default="1,8,64")
    ap.add_argument("--contexts", default="2048,32768")
    ap.add_argument("--pages", default="16", help="slots per block, one run each")
    ap.add_argument("--sweep", action="store_true", help="time the paged kernels under other launch configs too")
    ap.add_argument("--sweep-splits", default="", help="e.g. 1,4,16: time rows of mixed lengths with these splits")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    results = []
    names = ("static", "paged", "paged fp8", "mixed", "skewed")
    print(f"{'model':8} {'page':>4} {'batch':>5} {'context':>7}  " + "  ".join(f"{n:>18}" for n in names))
    for model, page in ((m, int(p)) for m in MODELS for p in args.pages.split(",")):
        for B in (int(x) for x in args.batch_sizes.split(",")):
            for ctx in (int(x) for x in args.contexts.split(",")):
                with torch.no_grad():
                    r = run(model, B, ctx, page, dev, SWEEP if args.sweep else (),
                            tuple(int(x) for x in args.sweep_splits.split(",") if x))
                results.append({"model": model, "batch": B, "context": ctx, "page": page, **r})
                cells = "  ".join(f"{r[n]['ms']:7.3f} ms {r[n]['TB/s']:4.2f} TB/s" for n in names)
                print(f"{model:8} {page:4d} {B:5d} {ctx:7d}  {cells}", flush=True)
                for n in r:
                    if n not in names:
                        print(f"{'':24}{n}: {r[n]['ms']:7.3f} ms {r[n]['TB/s']:4.2f} TB/s", flush=True)
                torch.cuda.empty_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paged_attention.json").write_text(json.dumps({"device": torch.cuda.get_device_name(), "results": results},
                                                         indent=1))


if __name__ == "__main__":
    main()
