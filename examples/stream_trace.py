"""Stream a long reasoning trace with the iterator API, then show where the time went.

    python examples/stream_trace.py [--model PATH] ["problem"] [--max-new-tokens N]

``reasoning.stream(...)`` runs the generation in a background thread and yields text deltas as
tokens are produced; breaking out of the loop stops the generation.
"""

from __future__ import annotations

import argparse
import time

import reasoning

PROBLEM = "A shop sells 347 boxes of 28 pencils and then 129 more pencils. How many pencils is that?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("problem", nargs="?", default=PROBLEM)
    ap.add_argument("--model", help="checkpoint folder (default: the built-in model)")
    ap.add_argument("--max-new-tokens", type=int, help="generation budget (default: the model's)")
    ap.add_argument("--temperature", type=float, help="default: the model's")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args()

    engine = reasoning.load(args.model, device=args.device)
    stream = reasoning.stream(args.problem, engine, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature)
    start = time.perf_counter()
    first = None
    for delta in stream:  # text as it is generated
        first = first or time.perf_counter() - start
        print(delta, end="", flush=True)
    result = stream.result
    print("\n")
    print(f"answer: {result.answer}")
    print(f"first text after {first or 0:.2f} s; {result.stats}")


if __name__ == "__main__":
    main()
