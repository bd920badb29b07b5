"""Evaluate a reasoning model on a JSONL problem set: k samples per problem, pass@1, pass@k, maj@k.

    python examples/evaluate_problems.py [--model PATH] [--problems examples/data/arithmetic_20.jsonl] [--k 4]
                                         [--out DIR]

The default problem set is 20 held-out arithmetic problems from ``reasoning.curriculum``
(the test split; the built-in model never saw them). Each line is {"problem": ..., "answer": ...}.
With ``--out DIR`` the run is kept there (generations.jsonl, summary.json, report.png) and the
same command resumes it after an interruption. The same thing from the shell, on every GPU:
``torchrun --nproc-per-node G -m reasoning eval examples/data/arithmetic_20.jsonl --k 4 --out DIR``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import reasoning

DATA = Path(__file__).resolve().parent / "data" / "arithmetic_20.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="checkpoint folder (default: the built-in model)")
    ap.add_argument("--problems", default=str(DATA), help="JSONL file of {\"problem\", \"answer\"}")
    ap.add_argument("--k", type=int, default=4, help="samples per problem (seeds 0..k-1)")
    ap.add_argument("--limit", type=int, help="only the first N problems")
    ap.add_argument("--max-new-tokens", type=int, help="generation budget (default: the model's)")
    ap.add_argument("--temperature", type=float, help="default: the model's (0.6 for reasoning models)")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--out", help="run folder: keep the run there, resumable (default: in memory)")
    args = ap.parse_args()

    engine = reasoning.load(args.model, device=args.device)
    problems = reasoning.read_problems(args.problems, limit=args.limit)
    ev = reasoning.evaluate(problems, engine, k=args.k, out=args.out, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature)
    for problem, samples, vote in zip(ev.problems, ev.samples, ev.majority):
        marks = "".join("+" if s.correct else "." for s in samples)
        print(f"{marks}  majority {vote!s:>8}  reference {problem.answer:>8}  {problem.problem}")
    print()
    print(ev.table())


if __name__ == "__main__":
    main()
