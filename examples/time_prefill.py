"""Where time to first token goes: a request's prefill through the engine, per prompt length.

    python examples/time_prefill.py --models sambay,dense --lengths 64,128,512,2048 --out runs/prefill

For each model (random weights in the official shapes, bf16, on the GPU): the wall time of
``Engine.generate`` for one request of each prompt length with ``max_new_tokens=1`` (admission,
the prefill, sampling the first token), the median of a few runs after a warm-up, and a profile of
one 128-token prefill (the ops with the most host time: an eager prefill launches every kernel
from Python); then 16 prompts admitted together, as a server admits them, in (16, T) shapes never
seen before, each timed the first time and again (a per-shape cost, such as cuDNN attention's
graph build, shows as the difference), and a profile of one more new shape. Also the Phi-4
tokenizer's time to encode a chat prompt (``--o200k`` or ``$SAMBAY_O200K_BPE``). Writes
``prefill.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from sambay import Phi4MiniConfig, Phi4MiniForCausalLM, SambaYConfig, SambaYForCausalLM  # noqa: E402
from sambay.generate import Engine, Request, SamplingParams  # noqa: E402

MODELS = {"sambay": (SambaYForCausalLM, SambaYConfig), "dense": (Phi4MiniForCausalLM, Phi4MiniConfig)}


def first_token_seconds(engine: Engine, length: int, reps: int) -> float:
    ids = torch.randint(100, 50000, (length,), generator=torch.Generator().manual_seed(length)).tolist()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.generate([Request(ids, SamplingParams(max_new_tokens=1))])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def group_seconds(engine: Engine, rows: int, length: int) -> float:
    """``rows`` prompts of lengths ``length - rows + 1 .. length`` admitted together (one right-padded
    prefill of a (rows, length) batch), each to its first token."""
    reqs = [Request(torch.randint(100, 50000, (length - i,), generator=torch.Generator().manual_seed(i)).tolist(),
                    SamplingParams(max_new_tokens=1)) for i in range(rows)]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    engine.generate(reqs)
    return time.perf_counter() - t0


def new_shapes(engine: Engine, rows: int, lengths: list[int]) -> dict:
    """A server's prefills rarely repeat a (rows, length) shape: each of ``lengths`` timed the
    first time and again; then a profile of one more new shape (host time by op)."""
    first = [1e3 * group_seconds(engine, rows, n) for n in lengths]
    again = [1e3 * group_seconds(engine, rows, n) for n in lengths]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        group_seconds(engine, rows, max(lengths) + 7)
    return {"rows": rows, "lengths": lengths, "first_ms": first, "again_ms": again,
            "profile_new_shape": prof.key_averages().table(sort_by="cpu_time_total", row_limit=12)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sambay,dense")
    ap.add_argument("--lengths", default="64,128,512,2048")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--o200k", help="the o200k_base BPE file (default $SAMBAY_O200K_BPE)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    report: dict = {"device": torch.cuda.get_device_name(), "models": {}}
    lengths = [int(x) for x in args.lengths.split(",")]
    for name in args.models.split(","):
        cls, cfg = MODELS[name]
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = cls(cfg.official())
        model = model.to(torch.bfloat16).eval()
        engine = Engine(model, max_batch_size=16, memory_fraction=0.5)
        first_token_seconds(engine, 128, 2)  # warm-up: kernels, cuBLAS
        row = {str(n): 1e3 * first_token_seconds(engine, n, args.reps) for n in lengths}
        print(f"{name}: ms to the first token by prompt length " + ", ".join(f"{n}: {ms:.1f}" for n, ms in row.items()),
              flush=True)
        shapes = new_shapes(engine, 16, [23, 29, 37, 41])
        print(f"{name}: 16 prompts admitted together, ms to their first tokens, a new (16, T) each time: "
              + ", ".join(f"T={n}: {a:.1f} (again {b:.1f})" for n, a, b in
                          zip(shapes["lengths"], shapes["first_ms"], shapes["again_ms"])), flush=True)
        print(shapes["profile_new_shape"], flush=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                torch.profiler.ProfilerActivity.CUDA]) as prof:
            first_token_seconds(engine, 128, 1)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
        print(table, flush=True)
        events = prof.key_averages()
        report["models"][name] = {"first_token_ms": row, "profile_top": table, "new_shapes": shapes,
                                  "cuda_kernels": sum(e.count for e in events if e.device_type.name == "CUDA")}
        del engine, model
        torch.cuda.empty_cache()
    try:
        from reasoning.curriculum import default_test_set
        from reasoning.tokenizer import Tokenizer

        tok = Tokenizer.phi4(args.o200k)
        text = tok.apply_chat_template([{"role": "user", "content": default_test_set()[0].question}])
        t0 = time.perf_counter()
        for _ in range(20):
            n = len(tok.encode(text))
        report["tokenizer_ms_per_prompt"] = 1e3 * (time.perf_counter() - t0) / 20
        print(f"tokenizer: {report['tokenizer_ms_per_prompt']:.2f} ms per chat prompt of {n} tokens", flush=True)
    except Exception as e:  # noqa: BLE001 - the timings above stand without it
        print(f"tokenizer timing skipped: {type(e).__name__}: {e}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prefill.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
