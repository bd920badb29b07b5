"""Through the server vs the engine alone, on the same requests; latency at several concurrencies.

    python examples/serve_vs_engine.py --model sambay --shape official --max-tokens 512 \
        --concurrency 1,16,256 --out runs/serve_sambay          # on a GPU (random weights, official shapes)
    python examples/serve_vs_engine.py --model sambay --shape tiny --max-tokens 32 --concurrency 1,4 --out /tmp/s

A model with random weights in the chosen shape (``sambay.bench``'s shapes; the official ones with
Phi-4's tokenizer, built offline from o200k_base: ``--o200k PATH`` or ``$SAMBAY_O200K_BPE``) runs
in one :class:`~reasoning.engine.ReasoningEngine`. First the engine alone, in this process: the
requests of the highest concurrency, all queued at once (``ReasoningEngine.run``), output tokens/s.
Then the same engine (built again, in the engine process that ``sambay serve`` starts) behind
``sambay serve``'s app (uvicorn in this process, as ``sambay serve`` runs it) and, per concurrency
C, ``examples/bench_serve.py`` in processes of its own with C clients (requests/s, output tokens/s,
TTFT, inter-token latency, TPOT percentiles). Random weights almost never sample a stop
token, so every request runs to ``--max-tokens`` (forced output lengths); the counts are measured
(``usage``), not assumed. Writes ``serve_vs_engine.json`` (and one JSON per concurrency) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402

from reasoning.curriculum import default_test_set  # noqa: E402
from reasoning.engine import ReasoningEngine, parse_dtype  # noqa: E402
from reasoning.server import EngineProcess, build_app  # noqa: E402
from reasoning.small_tokenizer import build_small_tokenizer  # noqa: E402
from reasoning.tokenizer import Tokenizer  # noqa: E402
from sambay import Phi4MiniConfig, Phi4MiniForCausalLM, SambaYConfig, SambaYForCausalLM  # noqa: E402

HERE = Path(__file__).resolve().parent


def build_engine(args: argparse.Namespace, max_batch: int) -> ReasoningEngine:
    tokenizer = Tokenizer.phi4(args.o200k) if args.shape == "official" else build_small_tokenizer()
    cls, cfg_cls = (SambaYForCausalLM, SambaYConfig) if args.model == "sambay" else (Phi4MiniForCausalLM, Phi4MiniConfig)
    config = cfg_cls.official() if args.shape == "official" else cfg_cls.tiny(vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = cls(config)
    model = model.to(parse_dtype(args.dtype)).eval()
    return ReasoningEngine(model, tokenizer, max_batch_size=max_batch)


def engine_alone(engine: ReasoningEngine, prompts: list[str], max_tokens: int) -> dict:
    params = engine.sampling(max_new_tokens=max_tokens)
    engine.run([(p, engine.sampling(max_new_tokens=4)) for p in prompts])  # warm-up: graphs, kernels
    before = dataclasses.replace(engine.engine.stats)
    t0 = time.perf_counter()
    results = engine.run([(p, params) for p in prompts])
    seconds = time.perf_counter() - t0
    after = engine.engine.stats
    tokens = sum(r.stats.generated_tokens for r in results)
    secs, wait = after.seconds - before.seconds, after.wait_seconds - before.wait_seconds
    return {"requests": len(prompts), "seconds": seconds, "output_tokens": tokens, "output_tokens_per_s": tokens / seconds,
            "decode_tokens_per_step_second": (after.decode_rows - before.decode_rows) / secs if secs > 0 else None,
            "host_share": 1 - wait / secs if secs > 0 else None,
            "finish_reasons": sorted({r.stats.finish_reason for r in results}), "preemptions": after.preemptions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["sambay", "dense"], default="sambay")
    ap.add_argument("--shape", choices=["official", "tiny"], default="official")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--o200k", help="the o200k_base BPE file (official shapes; default $SAMBAY_O200K_BPE or tiktoken's cache)")
    ap.add_argument("--max-tokens", type=int, default=512, help="output tokens per request (default 512)")
    ap.add_argument("--concurrency", default="1,16,256", help="comma-separated client counts (default 1,16,256)")
    ap.add_argument("--requests-per-client", type=int, default=2, help="requests = C x this, at least 8 (default 2)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    args.dtype = args.dtype or ("bfloat16" if str(args.device).startswith("cuda") else "float32")
    levels = [int(c) for c in args.concurrency.split(",") if c]
    counts = {c: max(8, c * args.requests_per_client) for c in levels}
    questions = [p.question for p in default_test_set()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    top = max(levels)
    engine = build_engine(args, top)
    prompts = [questions[i % len(questions)] for i in range(counts[top])]
    report = {"model": args.model, "shape": args.shape, "device": str(engine.model.device), "dtype": args.dtype,
              "max_tokens": args.max_tokens, "engine_alone": engine_alone(engine, prompts, args.max_tokens),
              "server": {}}
    print(json.dumps(report["engine_alone"]), flush=True)
    del engine  # the server's engine process builds its own, in the memory this one held
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    engine = EngineProcess(functools.partial(build_engine, args, top), max_queue=max(1024, 2 * top))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(engine, model_name=args.model), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)

    def bench(c: int, requests: int, max_tokens: int, path: Path) -> None:
        proc = subprocess.run([sys.executable, str(HERE / "bench_serve.py"), "--url", url, "--concurrency", str(c),
                               "--requests", str(requests), "--max-tokens", str(max_tokens), "--out", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)

    try:
        bench(16, 32, 4, out / "warm_up.json")  # as the engine alone had one: kernels compile on first use
        for c in levels:
            path = out / f"bench_c{c}.json"
            before, t_before = engine.state(), time.perf_counter()
            bench(c, counts[c], args.max_tokens, path)
            report["server"][str(c)] = json.loads(path.read_text())
            r = report["server"][str(c)]
            after, t_after = engine.state(), time.perf_counter()
            # the engine's side of the same window: decode tokens/s and the host share of its steps
            d = {k: after[k] - before[k] for k in ("decode_rows", "decode_steps", "step_seconds", "wait_seconds")}
            secs = d["step_seconds"]
            r["engine_while_serving"] = {"decode_tokens_per_s": d["decode_rows"] / (t_after - t_before),
                                         "decode_tokens_per_step_second": d["decode_rows"] / secs if secs > 0 else None,
                                         "mean_batch": d["decode_rows"] / max(1, d["decode_steps"]),
                                         "host_share": 1 - d["wait_seconds"] / secs if secs > 0 else None}
            e = r["engine_while_serving"]
            print(f"C={c}: {r['output_tokens_per_s']:.1f} tok/s, TTFT p50 {r['ttft_ms']['p50']:.1f} ms, "
                  f"ITL p50 {r['itl_ms']['p50']:.2f} ms; engine meanwhile {e['decode_tokens_per_step_second'] or 0:.0f} "
                  f"tok/s inside decode-only steps, mean batch {e['mean_batch']:.0f}, "
                  f"host share {e['host_share'] or 0:.2f}", flush=True)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    served = report["server"][str(top)]["output_tokens_per_s"]
    report["server_over_engine_at_top_concurrency"] = served / report["engine_alone"]["output_tokens_per_s"]
    (out / "serve_vs_engine.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"server / engine alone at C={top}: {report['server_over_engine_at_top_concurrency']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
