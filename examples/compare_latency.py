"""SambaY vs the dense Phi-4-mini: prefill time, batch-1 decode latency and batched decode
throughput, side by side in one run, with random weights in the official shapes.

    python examples/compare_latency.py --out bench_out                 # H100: the full comparison
    python examples/compare_latency.py --out bench_out --device cpu --tiny   # tiny shapes, < 1 min
    python examples/compare_latency.py --out bench_out --workload lognormal --requests 512 --steady-steps 300
    python examples/compare_latency.py --out bench_out --device cpu --tiny --workload lognormal

With ``--workload`` (a comma list of fixed, uniform, lognormal) only the workload benchmark runs
(sambay/workload.py): static and continuous batching end to end (or, with ``--steady-steps``, the
steady-state method, with ``--validate`` checked against a small end-to-end run), added as the
``workload`` section of OUT/results.json, with OUT/workload.png.

Writes OUT/results.json (every number, with device, backends and versions), OUT/latency.png
and OUT/throughput.png, and prints a table. See sambay/bench.py for what each number means.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import time
from pathlib import Path

import torch

import layers.backends as backends
from sambay import workload as wl
from sambay.bench import MODELS, BenchSettings, build, environment, measure_bandwidth, plot, run, table


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def hf_comparison(settings: BenchSettings, prompt: int = 2048, new_tokens: int = 256) -> dict:
    """The dense model through our engine vs transformers' own ``generate`` on the same weights
    (greedy, batch 1, ``prompt`` + ``new_tokens``)."""
    try:
        from transformers import Phi3Config, Phi3ForCausalLM
    except ImportError as e:
        raise SystemExit("the comparison with transformers' generate needs transformers: "
                         "pip install 'sambay[bench]' (or pass --no-hf)") from e

    from sambay.generate import Engine, Request, SamplingParams

    device, dtype = torch.device(settings.device), getattr(torch, settings.dtype)
    ours = build("dense", settings.shape, settings.device, dtype)
    ours.backends = settings.backends
    hf_config = Phi3Config(**{k: v for k, v in ours.config.to_dict().items() if k != "model_type"})
    with torch.device(device):
        hf = Phi3ForCausalLM(hf_config).to(dtype).eval()
    missing, unexpected = hf.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    ids = torch.randint(0, ours.config.vocab_size, (1, prompt), device=device)

    def time_it(fn) -> float:
        fn()  # warm up (graph capture, kernel compilation)
        torch.cuda.synchronize() if device.type == "cuda" else None
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize() if device.type == "cuda" else None
        return time.perf_counter() - t

    engine = Engine(ours)
    req = [Request(ids[0].tolist(), SamplingParams(temperature=0.0, max_new_tokens=new_tokens))]
    ours_s = time_it(lambda: engine.generate(req))
    with torch.no_grad():
        hf_s = time_it(lambda: hf.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                           do_sample=False, eos_token_id=None, pad_token_id=0))
    return {"prompt": prompt, "new_tokens": new_tokens, "ours_s": ours_s, "transformers_s": hf_s,
            "speedup": hf_s / ours_s}


def workload(args: argparse.Namespace, s: BenchSettings, out: Path) -> None:
    """The workload benchmark, added to OUT/results.json as its ``workload`` section."""
    t0 = time.perf_counter()
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("environment", environment(torch.device(s.device), s.backends))
    bandwidth = measure_bandwidth(s.device)
    print(f"copy bandwidth of {s.device}: {bandwidth / 1e12:.3f} TB/s (read + written, measured now)")
    results["workload_copy_bandwidth_bytes_per_s"] = bandwidth
    section, validation = {}, {}
    for name in args.workload.split(","):
        w = wl.WorkloadSettings.tiny(name) if args.tiny else wl.WorkloadSettings(workload=name)
        w.profile_host = args.profile_host
        for key in ("requests", "steady_steps", "max_batch_size", "num_blocks", "max_len", "kv_cache_dtype"):
            if getattr(args, key) is not None:
                setattr(w, key, getattr(args, key))
        wl.draw_lengths(w, 1)  # an unknown workload fails here, before any model is built
        section[name] = {}
        for kind in s.models:
            print(f"[{kind}] workload {name}: {w.requests} requests, prompt {w.prompt}"
                  + (f", steady state for {w.steady_steps} steps" if w.steady_steps else ", end to end"))
            model = build(kind, s.shape, s.device, getattr(torch, s.dtype), s.quantize)
            model.backends = s.backends
            section[name][kind] = {"settings": wl.asdict(w), **wl.run_workload(model, w, bandwidth)}
            if args.validate:  # each model's method against its own small end-to-end run
                small = wl.WorkloadSettings(**{**wl.asdict(w), "max_len": min(w.max_len, 4096),
                                               "median": min(w.median, 1024), "min_len": min(w.min_len, 256),
                                               "steady_steps": None})
                v = wl.validate_steady_state(model, small, bandwidth)
                validation.setdefault(name, {})[kind] = v
                print(f"    steady state vs end to end (saturated phase): {v['steady_vs_saturated_end_to_end']:.2f}x")
            del model
            torch._dynamo.reset()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    results.setdefault("workload", {}).update(section)
    if validation:
        results.setdefault("workload_validation", {}).update(validation)
    results["workload_seconds"] = time.perf_counter() - t0
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(wl.table(section))
    if not args.no_plot:
        print("plot:", wl.plot(results["workload"], str(out)) or "(matplotlib missing)")
    print(f"wrote {path} in {results['workload_seconds']:.0f}s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for results.json and the plots")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes and sizes (CPU smoke run)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma list of sambay,dense")
    ap.add_argument("--prompt-lengths", type=ints, help="prefill lengths, e.g. 1024,2048")
    ap.add_argument("--contexts", type=ints, help="batch-1 decode contexts")
    ap.add_argument("--batch-sizes", type=ints, help="throughput batch sizes")
    ap.add_argument("--prompt", type=int, help="throughput prompt length (default 2048)")
    ap.add_argument("--generate", type=int, help="throughput generation budget (default 32768)")
    ap.add_argument("--decode-steps", type=int, help="timed steps per point")
    ap.add_argument("--attention", choices=backends.ATTENTION)
    ap.add_argument("--mamba", choices=backends.MAMBA)
    ap.add_argument("--linear", choices=backends.LINEAR, help="triton: GEMV kernel at batch 1")
    ap.add_argument("--quantize", choices=["fp8"], help="fp8: linear weights in float8 e4m3 with per-row scales")
    ap.add_argument("--kv-cache-dtype", choices=["auto", "fp8"],
                    help="fp8: the paged K/V in float8 e4m3 with per-(token, head) scales (default auto)")
    ap.add_argument("--no-compile", action="store_true",
                    help="no torch.compile of the batch-1 decode step (CUDA graphs only)")
    ap.add_argument("--check-prompt", type=int, help="prompt length of the fast-vs-reference check (default 512)")
    ap.add_argument("--no-check", action="store_true", help="skip the fast-vs-reference check")
    ap.add_argument("--throughput-points", type=int, help="context points of each throughput run (default 5)")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers generate comparison")
    ap.add_argument("--workload", help="run the workload benchmark instead: comma list of " + ",".join(wl.WORKLOADS))
    ap.add_argument("--requests", type=int, help="workload: number of requests")
    ap.add_argument("--steady-steps", type=int, help="workload: steady-state method for this many steps")
    ap.add_argument("--max-batch-size", type=int, help="workload: the engine's max_batch_size")
    ap.add_argument("--num-blocks", type=int, help="workload: K/V pool blocks (default: from free memory)")
    ap.add_argument("--max-len", type=int, help="workload: longest output (default 32768)")
    ap.add_argument("--profile-host", action="store_true",
                    help="workload, steady state: a cProfile of the continuous engine's steps in results.json")
    ap.add_argument("--validate", action="store_true",
                    help="workload: check the steady-state method against an end-to-end run (lengths up to 4096)")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    s = BenchSettings.tiny(args.device) if args.tiny else BenchSettings(device=args.device)
    s.backends = backends.DEFAULT.replace(attention=args.attention, mamba=args.mamba, linear=args.linear)
    s.models = args.models.split(",")
    s.quantize, s.kv_cache_dtype = args.quantize, args.kv_cache_dtype
    if args.no_compile:
        s.compile = False
    if args.check_prompt is not None:
        s.check_prompt = args.check_prompt
    s.check = not args.no_check
    for name in ("prompt_lengths", "contexts", "batch_sizes", "prompt", "generate", "decode_steps", "throughput_points"):
        if getattr(args, name) is not None:
            setattr(s, name, getattr(args, name))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.workload:
        workload(args, s, out)
        return
    results = run(s)
    if not args.no_hf and "dense" in s.models:
        print("[dense] our engine vs transformers generate")
        results["transformers_generate"] = hf_comparison(s, *((32, 16) if args.tiny else ()))
    results["wall_seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if "transformers_generate" in results:
        h = results["transformers_generate"]
        print(f"dense, {h['prompt']} prompt + {h['new_tokens']} tokens: our engine {h['ours_s']:.2f}s, "
              f"transformers generate {h['transformers_s']:.2f}s ({h['speedup']:.2f}x)")
    if not args.no_plot:
        print("plots:", ", ".join(plot(results, str(out))))  # matplotlib is a dependency: always both
    print(f"wrote {out / 'results.json'} in {results['wall_seconds']:.0f}s")


if __name__ == "__main__":
    main()
