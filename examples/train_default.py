"""Train the built-in SambaY model (or, with --dense, its dense twin) from scratch.

    python examples/train_default.py --out runs/sambay            # the shipped model (GPU: ~5 min on an H100)
    python examples/train_default.py --out runs/dense --dense     # the dense twin, same recipe
    python examples/train_default.py --out /tmp/t --tiny --steps 300 --kinds add   # CPU smoke run

Writes, under --out:

    model/            the checkpoint: config.json, model.safetensors, tokenizer.json,
                      tokenizer_config.json, generation_config.json (copy it to
                      reasoning/default_model/ to ship it)
    train_log.json    the configs, per-step loss / grad norm / lr, periodic held-out accuracy,
                      and the final report on the 500 problems of default_test_set()

The final report evaluates the checkpoint as written (reloaded with ``load_model``, fp32),
greedy, batched through the generation engine. Same command + seed, same device: same run
(bit for bit on CPU; on CUDA up to the atomics of the mamba-ssm backward).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from reasoning.builtin_training import (  # noqa: E402
    CurriculumConfig, builtin_dense_config, builtin_sambay_config, heldout_accuracy, train_on_curriculum,
)
from reasoning.curriculum import default_test_set  # noqa: E402
from reasoning.small_tokenizer import build_small_tokenizer  # noqa: E402
from reasoning.tokenizer import load_tokenizer  # noqa: E402
from sambay import Phi4MiniForCausalLM, SambaYConfig, SambaYForCausalLM, load_model  # noqa: E402
from sambay.train import write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder (model/ and train_log.json go there)")
    ap.add_argument("--dense", action="store_true", help="train the dense Phi-4-mini twin instead of SambaY")
    ap.add_argument("--tiny", action="store_true", help="a tiny model (SambaYConfig.tiny shape), for CPU checks")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    d = CurriculumConfig()
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--min-lr", type=float, default=d.min_lr)
    ap.add_argument("--warmup", type=int, default=d.warmup_steps)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--kinds", default=",".join(d.kinds), help=f"comma-separated, repeat to weight (default {d.kinds})")
    ap.add_argument("--dtype", default=d.dtype, choices=["auto", "bf16", "fp32"])
    ap.add_argument("--eval-every", type=int, default=d.eval_every)
    ap.add_argument("--eval-problems", type=int, default=d.eval_problems)
    ap.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    ap.add_argument("--workers", type=int, default=None, help="batch-building processes (default: 4 on CUDA, 0 on CPU)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds for the training loop: a slower machine runs fewer steps (0: never; "
                         "default 380 on CUDA, 0 on CPU). See sambay.train.train")
    ap.add_argument("--test-problems", type=int, default=500,
                    help="final report on the first N of default_test_set() (those of the trained kinds)")
    ap.add_argument("--test-batch", type=int, default=None, help="rows per generation batch (default: 500 CUDA, 100 CPU)")
    args = ap.parse_args()

    device = torch.device(args.device)
    out = Path(args.out)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    cfg = CurriculumConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, min_lr=args.min_lr, warmup_steps=args.warmup,
        seed=args.seed, kinds=kinds, dtype=args.dtype, eval_every=args.eval_every,
        eval_problems=args.eval_problems, ckpt_every=args.ckpt_every,
        workers=args.workers if args.workers is not None else (4 if device.type == "cuda" else 0),
        time_budget=args.time_budget if args.time_budget is not None else (380.0 if device.type == "cuda" else 0.0),
    )
    t0 = time.perf_counter()
    tokenizer = build_small_tokenizer()
    if args.tiny:
        config = SambaYConfig.tiny(vocab_size=tokenizer.vocab_size, sliding_window=64)
    else:
        config = builtin_dense_config(tokenizer.vocab_size) if args.dense else builtin_sambay_config(tokenizer.vocab_size)
    torch.manual_seed(cfg.seed)  # init on CPU: the same weights whatever the device
    model = (Phi4MiniForCausalLM if args.dense and not args.tiny else SambaYForCausalLM)(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{type(model).__name__}: {n_params / 1e6:.2f}M parameters ({n_params * 4 / 1e6:.1f} MB fp32), "
          f"vocab {tokenizer.vocab_size}, device {device}; {cfg}", flush=True)

    log_path = out / "train_log.json"
    log = train_on_curriculum(model, tokenizer, cfg, out=out / "model", log_path=log_path)

    # The report is on the checkpoint as shipped: reloaded from disk, in its stored dtype.
    shipped = load_model(out / "model", device=device)
    shipped_tok = load_tokenizer(out / "model")
    problems = [p for p in default_test_set() if p.kind in kinds][:args.test_problems]
    batch = args.test_batch or (500 if device.type == "cuda" else 100)
    report = heldout_accuracy(shipped, shipped_tok, problems, max_new_tokens=cfg.eval_max_new_tokens, batch_size=batch)
    report.pop("generations")
    log["final_eval"] = report
    log["total_seconds"] = round(time.perf_counter() - t0, 1)
    log["checkpoint_bytes"] = sum(f.stat().st_size for f in (out / "model").iterdir())
    write_json(log_path, log)
    kinds = ", ".join(f"{k} {v:.1%}" for k, v in report["per_kind"].items())
    print(json.dumps({k: log[k] for k in ("steps_run", "train_seconds", "total_seconds", "checkpoint_bytes")}))
    print(f"held-out greedy exact match on {report['n']} problems: {report['accuracy']:.1%} ({kinds}); "
          f"trace exact {report['trace_exact']:.1%}; eval {report['seconds']} s")


if __name__ == "__main__":
    main()
