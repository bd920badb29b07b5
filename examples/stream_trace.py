"""Stream reasoning traces with the iterator API, check each answer, and show where the time went.

    python examples/stream_trace.py [--model PATH] ["problem" --reference ANSWER] [--max-new-tokens N]

``reasoning.stream(...)`` runs the generation in a background thread and yields text deltas as
tokens are produced; breaking out of the loop stops the generation.

Without a problem it streams one problem of each kind the built-in model was trained on
(``reasoning/curriculum.py``: addition, subtraction, multiplication, word problems), drawn from
the held-out test split, so none of them was seen in training, and checks each answer against
the curriculum's.
"""

from __future__ import annotations

import argparse
import time

import reasoning
from reasoning.curriculum import KINDS, generate_problems


def default_problems() -> list[tuple[str, str]]:
    """(question, answer): one held-out problem of each curriculum kind."""
    return [(p.question, p.answer) for p in generate_problems(len(KINDS), seed=7, split="test")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("problem", nargs="?", help="a problem of your own (default: held-out curriculum problems)")
    ap.add_argument("--reference", help="the expected answer to your problem, to check the model's")
    ap.add_argument("--model", help="checkpoint folder (default: the built-in model)")
    ap.add_argument("--max-new-tokens", type=int, help="generation budget (default: the model's)")
    ap.add_argument("--temperature", type=float, help="default: the model's")
    ap.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    args = ap.parse_args()
    if args.reference is not None and args.problem is None:
        ap.error("--reference checks your own problem: give the problem too")

    engine = reasoning.load(args.model, device=args.device)
    problems = [(args.problem, args.reference)] if args.problem is not None else default_problems()
    correct = 0
    for question, reference in problems:
        print(f"Q: {question}\n")
        stream = reasoning.stream(question, engine, max_new_tokens=args.max_new_tokens,
                                  temperature=args.temperature)
        start = time.perf_counter()
        first = None
        for delta in stream:  # text as it is generated
            first = first or time.perf_counter() - start
            print(delta, end="", flush=True)
        result = stream.result.with_reference(reference)
        print("\n")
        if reference is None:
            print(f"answer: {result.answer}   (no reference to check it against)")
        else:
            correct += bool(result.correct)
            print(f"answer: {result.answer}   reference: {reference}   correct: {'yes' if result.correct else 'no'}")
        print(f"first text after {first or 0:.2f} s; {result.stats}\n")
    checked = sum(reference is not None for _, reference in problems)
    if checked:
        print(f"{correct} of {checked} answers match the reference")


if __name__ == "__main__":
    main()
