"""Solve one math problem with a reasoning model, streaming the trace as it is written.

    python examples/solve_math.py [--model PATH] ["What is 347 * 28?"] [--max-new-tokens N]

Without --model it uses the built-in default model. Runs on CPU (or a GPU when there is one).
"""

from __future__ import annotations

import argparse

import reasoning


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("problem", nargs="?", default="What is 347 * 28?")
    ap.add_argument("--model", help="checkpoint folder (default: the built-in model)")
    ap.add_argument("--reference", default="9716", help="the expected answer, to check the model's")
    ap.add_argument("--max-new-tokens", type=int, help="generation budget (default: the model's)")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args()

    engine = reasoning.load(args.model, device=args.device)
    print(f"{engine}\n\nQ: {args.problem}\n")
    result = reasoning.solve(args.problem, engine, reference=args.reference, max_new_tokens=args.max_new_tokens,
                             on_text=lambda _, delta: print(delta, end="", flush=True))
    print(f"\n\nanswer: {result.answer}   correct: {result.correct}   (reference {args.reference})")
    print(f"stats:  {result.stats}")


if __name__ == "__main__":
    main()
