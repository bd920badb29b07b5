"""The ``sambay`` command (also ``python -m reasoning``).

    sambay ask "What is 347 * 28?" [--model PATH] [--temperature 0.6] [--top-p 0.95] [--top-k 0]
               [--max-new-tokens N] [--seed 0] [--system TEXT] [--stop STR] [--reference ANSWER]
               [--stream/--no-stream] [--json] [--device cuda] [--dtype bfloat16]
               [--quantize fp8] [--kv-cache-dtype fp8] [--max-batch-size N] [--num-blocks N]
    sambay eval problems.jsonl --k 4 --out DIR [--limit N] [--progress] [model and sampling flags]
    torchrun --nproc-per-node G -m reasoning eval problems.jsonl --k 4 --out DIR   # data-parallel
    sambay serve [--model PATH] [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--max-queue N]
                 [--no-reasoning-parser] [--served-model-name NAME] [--device cuda] [--dtype bfloat16]

Without ``--model`` the built-in default model is used. Sampling settings left out come from
the model folder's ``generation_config.json``, else the reasoning defaults (temperature 0.6,
top-p 0.95, 32768 new tokens). Exit status: 0 on success, 2 on bad input (arguments, sampling
values, a missing model or dataset, a prompt that does not fit the model's context).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from sambay.generate import SamplingParams

__all__ = ["main"]


class InputError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _add_engine_args(g: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    g.add_argument("--quantize", choices=["fp8"],
                   help="fp8: every projection and the lm_head in float8 e4m3 with per-row scales, computed at load")
    g.add_argument("--kv-cache-dtype", choices=["auto", "fp8"], default="auto",
                   help="fp8: the growing K/V cache in float8 e4m3 with per-(token, head) scales (default auto: "
                        "the model's dtype)")
    g.add_argument("--max-batch-size", type=int, metavar="N",
                   help="most requests decoding at once (default: the engine's, 256 on CUDA, 32 on CPU)")
    g.add_argument("--num-blocks", type=int, metavar="N", help="K/V blocks in the pool (default: the engine's; "
                                                               "on CUDA what 90%% of the free memory holds)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="PATH", help="checkpoint folder (default: the built-in model)")
    g.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    g.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoint's)")
    _add_engine_args(g)
    s = p.add_argument_group("sampling (defaults: the model's generation_config.json, else the reasoning defaults)")
    s.add_argument("--temperature", type=float, help="0 is greedy (reasoning default 0.6)")
    s.add_argument("--top-p", type=float, help="nucleus mass in (0, 1] (reasoning default 0.95)")
    s.add_argument("--top-k", type=int, help="keep the k most likely tokens; 0 keeps all")
    s.add_argument("--max-new-tokens", type=int, help="generation budget (default 32768, capped by the context)")
    s.add_argument("--seed", type=int, help="sampling seed (default 0)")
    s.add_argument("--system", help="system message for the chat prompt")
    s.add_argument("--stop", action="append", default=[], metavar="STR",
                   help="stop string (repeatable); the text ends before it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sambay", description="Long chain-of-thought reasoning with SambaY / Phi-4-mini models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{ask,eval,serve}")

    ask = sub.add_parser("ask", help="answer one question, streaming the reasoning trace",
                         description="Answer one question: print the reasoning trace (streamed), the boxed "
                                     "answer and statistics.")
    ask.add_argument("question")
    _add_model_args(ask)
    ask.add_argument("--reference", help="reference answer: also print whether the answer matches it")
    ask.add_argument("--stream", action=argparse.BooleanOptionalAction, default=True,
                     help="print the text as it is produced (default: on)")
    ask.add_argument("--json", action="store_true", help="print the result as one JSON object instead")

    ev = sub.add_parser("eval", help="evaluate a JSONL file of {\"problem\", \"answer\"}",
                        description="Evaluate a JSONL file of {\"problem\" (or \"question\"): ..., \"answer\": ...} "
                                    "lines: k samples per problem (seeds seed..seed+k-1) through the continuous engine, "
                                    "graded with math-verify. DIR gets every generation as it finishes "
                                    "(generations.jsonl), summary.json (pass@1, pass@k, maj@k, lengths, truncation) and "
                                    "report.png. Rerunning the same command resumes an interrupted run. Under torchrun "
                                    "the work is shared by the ranks (one GPU each). A bad line is reported with its "
                                    "line number and skipped.")
    ev.add_argument("problems", metavar="problems.jsonl")
    _add_model_args(ev)
    ev.add_argument("--k", type=int, default=1, help="samples per problem, seeds seed..seed+k-1 (default 1)")
    ev.add_argument("--out", required=True, metavar="DIR", help="run folder (created; resumed when it holds this run)")
    ev.add_argument("--limit", type=int, help="evaluate only the first N valid problems")
    ev.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="a progress bar on stderr (default: on a terminal)")
    _add_serve_parser(sub)
    return parser


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat and completions, streaming)",
                        description="Serve the model over the OpenAI API (/v1/chat/completions, /v1/completions, "
                                    "/v1/models, /health, /metrics) on the continuous-batching engine. Without "
                                    "--model: the built-in model on the CPU.")
    sv.add_argument("--model", metavar="PATH", help="checkpoint folder (default: the built-in model)")
    sv.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cpu for the built-in model, else cuda "
                                     "when available)")
    sv.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoint's)")
    _add_engine_args(sv)
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    sv.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1/*")
    sv.add_argument("--served-model-name", metavar="NAME",
                    help="the model's name in the API (default: the folder's name, 'sambay-builtin' without --model)")
    sv.add_argument("--max-queue", type=int, default=1024, metavar="N",
                    help="most requests in flight, running and waiting (n choices count n); beyond, 429 (default 1024)")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 20, metavar="B",
                    help="larger request bodies get 413 (default 1 MiB)")
    sv.add_argument("--no-reasoning-parser", dest="reasoning_parser", action="store_false",
                    help="leave <think>...</think> in content instead of splitting it into reasoning_content")
    sv.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sv.add_argument("--access-log", action="store_true", help="log every HTTP request")


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags given, checked now (before a model is loaded)."""
    given = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k", "max_new_tokens", "seed")
             if getattr(args, k) is not None}
    try:
        SamplingParams(**given)
    except ValueError as e:
        raise InputError(str(e).replace("top_p", "--top-p").replace("max_new_tokens", "--max-new-tokens")
                         .replace("top_k", "--top-k").replace("temperature", "--temperature")) from None
    return given


def _engine_options(args: argparse.Namespace) -> dict[str, int]:
    """The engine flags given (the engine checks their values)."""
    return {k: v for k, v in (("max_batch_size", args.max_batch_size), ("num_blocks", args.num_blocks))
            if v is not None}


def _flag_names(message: str) -> str:
    """An engine error in the words of the command line."""
    return message.replace("max_batch_size", "--max-batch-size").replace("num_blocks", "--num-blocks")


def _load(args: argparse.Namespace):
    from . import api
    from .engine import parse_dtype

    try:
        parse_dtype(args.dtype)
        return api.load(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize,
                        kv_cache_dtype=args.kv_cache_dtype, **_engine_options(args))
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        raise InputError(_flag_names(str(e))) from None


def _ask(args: argparse.Namespace) -> int:
    sampling = _sampling(args)
    engine = _load(args)
    out = sys.stdout
    streamed = args.stream and not args.json

    def on_text(_: int, delta: str) -> None:
        out.write(delta)
        out.flush()

    try:
        result = engine.solve(args.question, reference=args.reference, system=args.system, stop=args.stop,
                              on_text=on_text if streamed else None, progress=None if not streamed else False,
                              **sampling)
    except ValueError as e:
        raise InputError(str(e)) from None
    failed = result.stats.finish_reason == "error"  # e.g. non-finite logits: broken weights
    if failed:
        print(f"sambay ask: error: {result.stats.error}", file=sys.stderr)
    if args.json:
        print(json.dumps({"question": args.question, **result.to_dict()}, ensure_ascii=False))
        return 1 if failed else 0
    if not streamed:
        out.write(result.text)
    print("\n" + "-" * 40)
    print(f"answer: {result.answer}" if result.answer is not None else "answer: (no \\boxed{} answer in the text)")
    if result.correct is not None:
        print(f"correct: {'yes' if result.correct else 'no'} (reference {result.reference})")
    print(f"stats: {result.stats}")
    return 1 if failed else 0


def _eval(args: argparse.Namespace) -> int:
    import os

    import torch.distributed as dist

    from .evaluation import REPORT_FILE, SUMMARY_FILE, evaluate, init_distributed, read_problems

    if args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    if args.limit is not None and args.limit < 0:
        raise InputError(f"--limit must be >= 0, got {args.limit}")
    sampling = _sampling(args)
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    bad: list[int] = []

    def on_error(line: int, message: str) -> None:
        bad.append(line)
        if first:
            print(f"{args.problems}:{line}: {message}", file=sys.stderr)

    try:
        problems = read_problems(args.problems, limit=args.limit, on_error=on_error)
    except OSError as e:
        raise InputError(f"cannot read {args.problems}: {e.strerror or e}") from None
    if not problems:
        raise InputError(f"{args.problems}: no valid problems to evaluate")
    args.device, rank, world = init_distributed(args.device)
    try:
        engine = _load(args)
        try:
            evaluation = evaluate(problems, engine, k=args.k, out=args.out, system=args.system, stop=args.stop,
                                  progress=args.progress, **sampling)
        except ValueError as e:
            raise InputError(str(e)) from None
        except OSError as e:
            raise InputError(f"cannot write {args.out}: {e.strerror or e}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(evaluation.table())
        t = evaluation.timing
        skipped = f"; {len(bad)} bad line(s) skipped: {', '.join(map(str, bad))}" if bad else ""
        print(f"{t['generations_run']} of {evaluation.n * evaluation.k} generations run now on {world} rank(s) "
              f"({t['seconds']:.1f} s){skipped}")
        print(f"written to {args.out}: generations.jsonl, {SUMMARY_FILE}, {REPORT_FILE}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import functools
    import logging
    from pathlib import Path

    from . import api
    from .engine import DEFAULT_MODEL_DIR, parse_dtype
    from .server import EngineProcess, build_app, serve

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {args.port}")
    if args.max_queue < 1:
        raise InputError(f"--max-queue must be >= 1, got {args.max_queue}")
    if args.max_body_bytes < 1:
        raise InputError(f"--max-body-bytes must be >= 1, got {args.max_body_bytes}")
    if args.device is None and args.model is None:
        args.device = "cpu"  # the built-in model is tiny: the CPU serves it anywhere
    options = _engine_options(args)
    try:
        parse_dtype(args.dtype)
        # the engine is built in its own process (see reasoning.server.engine_process); its errors come back here
        engine = EngineProcess(functools.partial(api.load, args.model, device=args.device, dtype=args.dtype,
                                                 quantize=args.quantize, kv_cache_dtype=args.kv_cache_dtype,
                                                 **options), max_queue=args.max_queue)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        raise InputError(_flag_names(str(e))) from None
    name = args.served_model_name or ("sambay-builtin" if args.model is None else Path(args.model).resolve().name)
    app = build_app(engine, model_name=name, api_key=args.api_key, reasoning_parser=args.reasoning_parser,
                    max_body_bytes=args.max_body_bytes)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    host = f"[{args.host}]" if ":" in args.host else args.host
    info = engine.info
    logging.getLogger("sambay.server").info(
        "serving model '%s' (%s, %s on %s, %s) at http://%s:%d/v1", name, args.model or DEFAULT_MODEL_DIR,
        info.model, info.device, info.dtype, host, args.port)
    serve(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage error (or --help)
        return int(e.code or 0)
    try:
        return {"ask": _ask, "eval": _eval, "serve": _serve}[args.command](args)
    except InputError as e:
        print(f"sambay {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
