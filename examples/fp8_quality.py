"""What fp8 costs the built-in model (trained weights): held-out greedy accuracy, token agreement
and the KL divergence of next-token distributions, fp8 weights / fp8 K/V / both against bf16.

    python examples/fp8_quality.py --out fp8_quality            # CPU: a few minutes
    python examples/fp8_quality.py --out fp8_quality --device cuda

Every mode answers the 500 held-out problems (``reasoning.curriculum.default_test_set``) greedily
through the engine. Agreement and KL are measured on the bf16 model's own traces (teacher
forcing: each mode reads the same prompt + bf16 generation through a cache of its K/V dtype, one
cached prefill, which attends to the stored, quantized K/V as decoding does): the share of
generated positions where the mode's argmax is bf16's token, the mean KL(bf16 || mode) and the
relative error of the logits.
Writes OUT/fp8_quality.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from layers.linear import quantize_model
from reasoning.builtin_training import heldout_accuracy
from reasoning.curriculum import default_test_set
from reasoning.engine import DEFAULT_MODEL_DIR
from reasoning.tokenizer import load_tokenizer
from sambay import load_model

MODES = {"bf16": (None, None), "fp8 weights": ("fp8", None), "fp8 kv": (None, "fp8"), "fp8 weights + kv": ("fp8", "fp8")}


@torch.no_grad()
def teacher_forced_logits(model, ids: list[int], kv_cache_dtype: str | None) -> torch.Tensor:
    """Logits (T, V) of ``ids`` through one cached prefill (its K/V stored in ``kv_cache_dtype``)."""
    cache = model.allocate_cache(1, len(ids), kv_cache_dtype=kv_cache_dtype)
    return model(torch.tensor([ids], device=model.device), cache=cache).logits[0].float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="checkpoint folder (default: the built-in model)")
    ap.add_argument("--problems", type=int, default=500, help="held-out problems (default all 500)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(args.model)
    problems = default_test_set()[:args.problems]
    prompts = [tokenizer.encode(tokenizer.chat_prompt(p.question)) for p in problems]
    results, reference = {}, None
    t0 = time.perf_counter()
    for mode, (quantize, kv) in MODES.items():
        model = quantize_model(load_model(args.model, dtype=torch.bfloat16, device=args.device), quantize)
        report = heldout_accuracy(model, tokenizer, problems, kv_cache_dtype=kv, batch_size=100)
        row = {"accuracy": report["accuracy"], "trace_exact": report["trace_exact"], "seconds": report["seconds"],
               "failures": report["failures"][:5]}
        if reference is None:  # bf16: its traces are what the others are read against
            reference = [(p, g, teacher_forced_logits(model, p + g, None)[len(p) - 1:len(p) + len(g) - 1])
                         for p, g in zip(prompts, report["generations"])]
        else:
            agree = total = 0
            kl = err2 = ref2 = 0.0
            for p, g, ref in reference:
                got = teacher_forced_logits(model, p + g, kv)[len(p) - 1:len(p) + len(g) - 1]
                agree += int((got.argmax(-1) == torch.tensor(g, device=got.device)).sum())
                total += len(g)
                err2 += float((got - ref).square().sum())
                ref2 += float(ref.square().sum())
                kl += float(F.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                     reduction="sum"))
            row.update({"token_agreement": agree / total, "mean_kl_nats": kl / total, "positions": total,
                        "logits_rel_err": (err2 / ref2) ** 0.5})
        results[mode] = row
        print(f"{mode:>17}: accuracy {row['accuracy']:.1%}"
              + (f", token agreement {row['token_agreement']:.4%}, KL {row['mean_kl_nats']:.2e} nats/token"
                 if "token_agreement" in row else ""), flush=True)
    base = results["bf16"]["accuracy"]
    for row in results.values():
        row["accuracy_points_vs_bf16"] = 100 * (row["accuracy"] - base)
    record = {"model": args.model, "device": str(args.device), "problems": len(problems), "torch": torch.__version__,
              "seconds": time.perf_counter() - t0, "modes": results}
    (out / "fp8_quality.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{'mode':>17} {'accuracy':>9} {'vs bf16':>8} {'agreement':>10} {'KL nats/token':>14} {'logits err':>11}")
    for mode, row in results.items():
        agreement = f"{row['token_agreement']:.4%}" if "token_agreement" in row else "-"
        kl = f"{row['mean_kl_nats']:.2e}" if "mean_kl_nats" in row else "-"
        err = f"{row['logits_rel_err']:.2e}" if "logits_rel_err" in row else "-"
        print(f"{mode:>17} {row['accuracy']:>9.1%} {row['accuracy_points_vs_bf16']:>+8.1f} {agreement:>10} {kl:>14} "
              f"{err:>11}")
    print(f"wrote {out / 'fp8_quality.json'} in {record['seconds']:.0f} s")


if __name__ == "__main__":
    main()
