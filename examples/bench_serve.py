"""Serving benchmark: C concurrent clients send N streaming chat requests to an OpenAI-compatible
server and measure what users see, as vLLM's ``benchmark_serving`` does.

    sambay serve --port 8000 &
    python examples/bench_serve.py --url http://127.0.0.1:8000 --concurrency 16 --requests 256 --out bench.json

Reports requests/s and output tokens/s (the server's ``usage.completion_tokens``) over the span
from the first request sent to the last one finished, and the mean / p50 / p90 / p99 of the time
to first token (request sent to the first text delta), the inter-token latency (gaps between text
deltas), the time per output token ((end - first delta) / (tokens - 1)) and the end-to-end
latency, in milliseconds; printed and written as JSON (``--out``). Prompts: the held-out
arithmetic questions of the curriculum (cycled), or ``--prompt TEXT`` (repeatable). ``--max-tokens`` forces a budget (a model with random weights
runs to it: forced output lengths).

The clients run in ``--processes`` processes (default: one per 32 clients), each an asyncio loop
of its share of the clients and requests: one Python process parsing every stream with the
``openai`` client tops out at a few thousand chunks a second, which a GPU server at high
concurrency exceeds, and the benchmark would measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import openai  # noqa: E402

from reasoning.curriculum import default_test_set  # noqa: E402


@dataclass
class Sample:
    """What one request took."""

    ok: bool
    sent: float = 0.0  # perf_counter (CLOCK_MONOTONIC: one clock for the processes of a run)
    error: str | None = None
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)
    e2e: float = 0.0
    output_tokens: int = 0


async def one_request(client: openai.AsyncOpenAI, model: str, prompt: str, args: argparse.Namespace) -> Sample:
    start = time.perf_counter()
    last = None
    sample = Sample(ok=False, sent=start)
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], stream=True,
            stream_options={"include_usage": True}, max_tokens=args.max_tokens, temperature=args.temperature,
            seed=args.seed)
        async for chunk in stream:
            if chunk.usage is not None:
                sample.output_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                delta = choice.delta
                if delta.content or getattr(delta, "reasoning_content", None):
                    now = time.perf_counter()
                    if last is None:
                        sample.ttft = now - start
                    else:
                        sample.itl.append(now - last)
                    last = now
        sample.ok = True
    except openai.APIError as e:
        sample.error = f"{type(e).__name__}: {e}"
    sample.e2e = time.perf_counter() - start
    return sample


def summary(values: list[float]) -> dict[str, float | None]:
    """mean / p50 / p90 / p99 in milliseconds (None without values)."""
    if not values:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    ordered = sorted(values)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return {"mean": statistics.fmean(values) * 1e3, "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99)}


async def clients(args: argparse.Namespace, first: int, count: int, concurrency: int, ready: Callable[[], None]
                  ) -> list[Sample]:
    """Requests first .. first + count - 1, sent by ``concurrency`` clients of one event loop,
    once ``ready()`` returns (the processes of a run start together)."""
    client = openai.AsyncOpenAI(base_url=args.base, api_key=args.api_key or "none", max_retries=0,
                                timeout=args.timeout)
    prompts = args.prompt or [p.question for p in default_test_set()]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first, first + count):
        queue.put_nowait(i)
    samples: list[Sample] = []

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            samples.append(await one_request(client, args.model, prompts[i % len(prompts)], args))

    ready()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return samples


def _process(args: argparse.Namespace, first: int, count: int, concurrency: int, barrier: Any,
             results: multiprocessing.Queue) -> None:
    results.put([asdict(s) for s in asyncio.run(clients(args, first, count, concurrency, barrier.wait))])


def shares(total: int, parts: int) -> list[int]:
    """``total`` split in ``parts`` near-equal whole shares."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def run(args: argparse.Namespace) -> dict:
    base = args.url.rstrip("/")
    args.base = base if base.endswith("/v1") else base + "/v1"
    if args.model is None:
        args.model = openai.OpenAI(base_url=args.base, api_key=args.api_key or "none").models.list().data[0].id
    procs = args.processes or max(1, args.concurrency // 32)
    procs = min(procs, args.concurrency)
    counts, conc = shares(args.requests, procs), shares(args.concurrency, procs)
    firsts = [sum(counts[:i]) for i in range(procs)]
    if procs == 1:
        samples = asyncio.run(clients(args, 0, args.requests, args.concurrency, lambda: None))
    else:  # the processes start their clients together, once all are up (importing takes seconds)
        ctx = multiprocessing.get_context("spawn")
        results: multiprocessing.Queue = ctx.Queue()
        barrier = ctx.Barrier(procs)
        workers = [ctx.Process(target=_process, args=(args, f, c, k, barrier, results), daemon=True)
                   for f, c, k in zip(firsts, counts, conc)]
        for w in workers:
            w.start()
        samples = [Sample(**s) for _ in workers for s in results.get()]
        for w in workers:
            w.join()
    # From the first request sent to the last one finished (as vLLM's benchmark_serving times a run)
    duration = max(s.sent + s.e2e for s in samples) - min(s.sent for s in samples) if samples else 0.0
    ok = [s for s in samples if s.ok]
    tokens = sum(s.output_tokens for s in ok)
    tpot = [(s.e2e - s.ttft) / (s.output_tokens - 1) for s in ok if s.ttft is not None and s.output_tokens > 1]
    return {
        "url": args.base, "model": args.model, "concurrency": args.concurrency, "requests": args.requests,
        "client_processes": procs, "completed": len(ok), "failed": len(samples) - len(ok),
        "errors": sorted({s.error for s in samples if s.error})[:5],
        "max_tokens": args.max_tokens, "temperature": args.temperature,
        "duration_s": duration, "requests_per_s": len(ok) / duration, "output_tokens": tokens,
        "output_tokens_per_s": tokens / duration,
        "ttft_ms": summary([s.ttft for s in ok if s.ttft is not None]),
        "itl_ms": summary([x for s in ok for x in s.itl]),
        "tpot_ms": summary(tpot),
        "e2e_ms": summary([s.e2e for s in ok]),
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000 (with or without /v1)")
    ap.add_argument("--concurrency", type=int, default=16, help="clients sending at once (default 16)")
    ap.add_argument("--requests", type=int, default=256, help="requests in all (default 256)")
    ap.add_argument("--max-tokens", type=int, default=None, help="output budget per request (default: the server's)")
    ap.add_argument("--temperature", type=float, default=None, help="default: the server's")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--prompt", action="append", help="a prompt (repeatable; default: held-out arithmetic questions)")
    ap.add_argument("--model", help="model name (default: the server's first)")
    ap.add_argument("--api-key", help="the server's --api-key")
    ap.add_argument("--processes", type=int, default=None,
                    help="client processes (default: one per 32 clients); each runs its share of clients and requests")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    ap.add_argument("--out", help="write the report here as JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for name in ("concurrency", "requests", "processes"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"bench_serve: error: --{name} must be >= 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
