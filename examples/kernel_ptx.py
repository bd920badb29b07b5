"""How the paged decode-attention kernel moves data, read from its sm_90 PTX, on any machine.

    python examples/kernel_ptx.py                      # dense heads, batch 64, bf16 and fp8 K/V pools
    python examples/kernel_ptx.py --out runs/ptx       # also writes each kernel's PTX

Builds the kernel for Hopper without a GPU (``layers.sm90``) under the launch config the GPU would
use for the shape, and prints per variant the counts of the instructions that matter for a
memory-bound kernel: asynchronous global-to-shared copies, ``ldmatrix`` against scalar shared
loads, vector widths of global loads, tensor-core ops, float8 conversions. Costs no GPU time.

What it showed (2026-12-01, dense heads, batch 64): the bf16 kernel reads its K and V tiles from
shared memory with 32 ``ldmatrix``; the fp8 one, with V stored dim-major, with 4 ``ldmatrix`` and
64 single-byte ``ld.shared`` (P @ V sums over tokens and sm_90 has no 8-bit transposing
``ldmatrix``), and on the H200 it read its (half as many) bytes at 1.0-1.1 TB/s against 4.3 TB/s
for bf16. With the float8 V pool's tokens contiguous (``layers.attention.tokens_contiguous``, the
cache's layout since) and its tiles loaded without a per-key mask: 8 ``ldmatrix``, no byte loads,
V through ``cp.async``. Its tiles then widened e4m3 -> bf16 as e4m3 -> f16 -> bf16 (a
``cvt.bf16.f16`` per value); widened to f16 instead (the dots in f16) each pair of values is one
``cvt.rn.f16x2.e4m3x2``. With both, and 128 keys / 4 warps / 3 stages, the H200 read float8 pools
at 3.0-4.0 TB/s at dense batch 64 (1.0-1.5 before; ``examples/results/h200/2026-12-01d/``), before
the kernel scaled each row of its f16 P @ V operand for precision (not timed since).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from layers.sm90 import compiles, ptx_counts, target_sm90  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--heads", default="24,8,128", help="query heads, KV heads, head dim (default: dense)")
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--out", help="write each variant's PTX here")
    args = ap.parse_args()
    target_sm90()
    import layers.attention_triton as at  # after target_sm90: its kernels compile for it
    from layers.attention import tokens_contiguous

    Hq, Hk, D = (int(x) for x in args.heads.split(","))
    B, page = args.batch, args.page
    for name, dtype in (("bf16", torch.bfloat16), ("fp8", torch.float8_e4m3fn)):
        q = torch.randn(B, 1, Hq, D, dtype=torch.bfloat16)
        pool = torch.randn(64, page, Hk, D).to(dtype)
        fp8 = dtype == torch.float8_e4m3fn
        v_pool = tokens_contiguous(pool) if fp8 else pool  # the cache's layouts
        scale = torch.ones(64, page, Hk) if fp8 else None
        table = torch.zeros(B, 2048 // page, dtype=torch.int32)
        q_pos = torch.full((B,), 2047)
        before = set(at._partial.device_caches[0][0]) if at._partial.device_caches else set()
        compiles(lambda: at.paged_attention_triton(q, pool, v_pool, table, q_pos, None, None, scale, scale))
        cache = at._partial.device_caches[0][0]
        (kernel,) = [k for key, k in cache.items() if key not in before]
        ptx = kernel.asm["ptx"]
        block, warps, stages = at.launch_config(B, Hk, fp8)
        counts = ", ".join(f"{k} {v}" for k, v in ptx_counts(ptx).items())
        print(f"{name:5} (keys per block {block}, {warps} warps, {stages} stages, shared {kernel.metadata.shared} B): "
              f"{counts}")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"paged_attention_{name}.ptx").write_text(ptx)


if __name__ == "__main__":
    main()
