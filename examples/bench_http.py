"""The server's HTTP side alone: ``sambay serve``'s app over a stand-in engine that hands out one
token of text (" tok") to every running request each ``--step`` seconds, as the engine process sends
a step's text, driven by ``examples/bench_serve.py``'s streaming clients. Reports the tokens/s the
HTTP process delivered and its CPU time per streamed token: the ceiling a GPU engine meets once it
produces tokens faster than one Python process can write them as server-sent events.

    python examples/bench_http.py --concurrency 256 --tokens 400 --step 0.01 --out http.json

The server runs in a child process (its CPU time is its own); the clients in ``--processes``
processes beside it, so on a small machine they compete with it for cores (the CPU time per token
is the figure that travels).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx  # noqa: E402


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class StandInEngine:
    """What ``build_app`` uses of an :class:`~reasoning.server.EngineProcess`: requests are taken at
    once, and a thread hands each running one a token of text every ``step`` seconds (its last a
    finished Result), through the same delivery onto the event loop as the real one."""

    def __init__(self, step: float, tokens: int) -> None:
        from reasoning.small_tokenizer import build_small_tokenizer
        from sambay.generate import SamplingParams

        self.step, self.tokens, self.max_queue, self.max_context = step, tokens, 1 << 16, 1 << 16
        self.tokenizer = build_small_tokenizer()
        self.stop_token_ids = self.tokenizer.stop_token_ids
        self.on_finished = None
        self._params = SamplingParams
        self.live: dict[str, list] = {}  # request id -> [loop, queue, index, tokens so far]
        self.lock = threading.Lock()
        self.events, self.cpu_at_first = 0, None
        self.ids = 0
        threading.Thread(target=self._run, daemon=True).start()

    def sampling(self, **overrides):  # noqa: ANN201
        return self._params(**{k: v for k, v in overrides.items() if v is not None})

    def alive(self) -> bool:
        return True

    def in_flight(self) -> int:
        return len(self.live)

    def state(self) -> dict[str, float]:
        return {"running": len(self.live), "waiting": 0, "free_blocks": 1, "num_blocks": 1, "preemptions": 0}

    async def submit(self, prompts, queue, *, chat, stop):  # noqa: ANN001, ANN201
        if self.cpu_at_first is None:
            self.cpu_at_first = cpu_seconds()
        loop, ids = asyncio.get_running_loop(), []
        with self.lock:
            for i, _ in enumerate(prompts):
                self.ids += 1
                ids.append(f"req-{self.ids}")
                self.live[ids[-1]] = [loop, queue, i, 0]
        return ids

    def abort(self, ids) -> None:  # noqa: ANN001
        with self.lock:
            for rid in ids:
                self.live.pop(rid, None)

    def close(self) -> None:
        pass

    def _result(self, rid: str):  # noqa: ANN202
        from reasoning.engine import Result, Stats

        stats = Stats(prompt_tokens=10, generated_tokens=self.tokens, prefill_seconds=0.0, decode_seconds=1.0,
                      finish_reason="length", stop=None, batch_size=1, error=None)
        return Result("", " tok" * self.tokens, [5] * self.tokens, stats, self.sampling(), request_id=rid)

    def _run(self) -> None:
        from reasoning.server.engine_process import _deliver

        while True:
            time.sleep(self.step)
            by_loop: dict = {}
            with self.lock:
                for rid, live in list(self.live.items()):
                    loop, queue, index, n = live
                    live[3] = n + 1
                    done = n + 1 >= self.tokens
                    event = (index, "done", self._result(rid)) if done else (index, "text", " tok")
                    by_loop.setdefault(loop, []).append((queue, event))
                    self.events += 1
                    if done:
                        del self.live[rid]
            for loop, batch in by_loop.items():
                loop.call_soon_threadsafe(_deliver, batch)


def serve_child(port: int, step: float, tokens: int) -> None:
    from reasoning.server import build_app
    from reasoning.server.app import serve

    engine = StandInEngine(step, tokens)
    app = build_app(engine, model_name="stand-in")

    @app.get("/stand-in")
    async def stats() -> dict:
        cpu = cpu_seconds() - (engine.cpu_at_first or 0.0)
        return {"tokens": engine.events, "cpu_seconds": cpu}

    serve(app, port=port, log_level="warning")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=400, help="tokens per request")
    ap.add_argument("--step", type=float, default=0.01, help="seconds between the stand-in engine's steps")
    ap.add_argument("--processes", type=int, default=None, help="client processes (default: bench_serve's)")
    ap.add_argument("--out", help="write the report here as JSON")
    ap.add_argument("--serve-child", type=int, help=argparse.SUPPRESS)  # internal: the server process, on this port
    args = ap.parse_args()
    if args.serve_child:
        serve_child(args.serve_child, args.step, args.tokens)
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen([sys.executable, __file__, "--serve-child", str(port), "--step", str(args.step),
                              "--tokens", str(args.tokens)])
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                httpx.get(url + "/health", timeout=1.0)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_serve

        client_args = bench_serve.parser().parse_args([
            "--url", url, "--concurrency", str(args.concurrency), "--requests", str(args.concurrency),
            "--max-tokens", str(args.tokens), *(["--processes", str(args.processes)] if args.processes else [])])
        report = bench_serve.run(client_args)
        server = httpx.get(url + "/stand-in").json()
    finally:
        child.terminate()
        child.wait()
    result = {"concurrency": args.concurrency, "tokens_per_request": args.tokens, "step_s": args.step,
              "demanded_tokens_per_s": args.concurrency / args.step, "delivered_tokens_per_s": report["output_tokens_per_s"],
              "server_cpu_seconds": server["cpu_seconds"], "server_tokens": server["tokens"],
              "server_cpu_us_per_token": 1e6 * server["cpu_seconds"] / max(1, server["tokens"]),
              "failed": report["failed"]}
    print(f"{args.concurrency} streams x {args.tokens} tokens, a step every {args.step * 1e3:.0f} ms "
          f"(demand {result['demanded_tokens_per_s']:.0f} tokens/s): delivered {result['delivered_tokens_per_s']:.0f} "
          f"tokens/s; HTTP process {result['server_cpu_us_per_token']:.1f} us CPU a token")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
