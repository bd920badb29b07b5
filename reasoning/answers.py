r"""Final answers of math generations: where they are, whether they are right, how to score them.

``extract_boxed(text)``
    Contents of the last top-level ``\boxed{...}`` (or ``\fbox{...}``), braces matched.
``split_reasoning(text)``
    ``(reasoning, answer_part)`` of a generation.
``answers_match(prediction, reference)`` / ``grade(pairs)``
    Equivalence as Hugging Face's ``math-verify`` decides it (:mod:`reasoning.grading`: a pool of
    worker processes, deterministic and bounded in time wherever it is called from).
``majority_vote(answers)``
    The most common answer, equivalent answers counted together.
``pass_at_1`` / ``pass_at_k`` / ``maj_at_k``
    Scores over samples.

Grading conventions are math-verify's (``answers_match(prediction, reference)`` is
``verify(parse(reference), parse(prediction))``, each side read as one inline formula
``$...$``): exact rationals, decimals equal to 6 places (``0.333333`` == ``\frac13``), symbolic
equality by simplification, percentages both ways (``10\%`` == ``10`` == ``0.1``), units and
``\text{}`` dropped, intervals with their open/closed ends, sets in any order, matrices entry by
entry, ``x = 3`` == ``3``, plain words case-insensitively. ``None`` or a blank prediction never
matches. A comparison that times out counts as not matching in :func:`answers_match` but is not
remembered as such; :func:`grade` reports it as ``None``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from fractions import Fraction

from .grading import Grader, default_grader

__all__ = ["answers_match", "extract_boxed", "grade", "maj_at_k", "majority_vote", "pass_at_1", "pass_at_k",
           "split_reasoning", "THINK_OPEN", "THINK_CLOSE"]


# ---------------------------------------------------------------------------
# extract_boxed
# ---------------------------------------------------------------------------

def _matching_brace(text: str, open_index: int) -> int | None:
    r"""Return the index of the ``}`` matching the ``{`` at ``open_index``.

    Escaped characters (``\{``, ``\}``, ``\\``) are skipped, so they never
    count as grouping braces.  Returns ``None`` if the group never closes.
    """
    depth = 0
    i = open_index
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BARE_BOX_ARG_RE = re.compile(r"[ \t]*([^\s$]+)")
_MAX_BOX_UNWRAP = 4  # boxes nested deeper than this are garbage anyway


def _read_box_argument(text: str, index: int) -> tuple[str | None, int]:
    """Read the argument of a box command whose name ends at ``index``.

    Returns ``(content, end)``.  ``content`` is ``None`` when a braced argument
    never closes; when there is no usable argument at all, ``end == index``.
    """
    j = index
    while j < len(text) and text[j] in " \t\n":
        j += 1
    if j < len(text) and text[j] == "{":
        close = _matching_brace(text, j)
        if close is None:
            return None, len(text)
        return text[j + 1 : close], close + 1
    # "\boxed 5" (or "\boxed5"): take the following run of non-space text.
    m = _BARE_BOX_ARG_RE.match(text, index)
    if m is None:
        return "", index
    return m.group(1).rstrip(".,;:"), m.end()


def extract_boxed(text: str) -> str | None:
    r"""Return the contents of the last ``\boxed{...}`` in ``text``.

    Braces are matched with nesting (``\boxed{\frac{1}{2}}`` -> ``\frac{1}{2}``)
    and escaped braces inside are kept (``\boxed{\{1,2\}}`` -> ``\{1,2\}``).
    ``\fbox{...}`` is treated like ``\boxed{...}``, and the brace-less form
    ``\boxed 5`` yields the following run of non-space characters (trailing
    sentence punctuation removed).  Boxes are found left to right, so a box
    nested inside another one is part of the outer box's contents; a box whose
    whole contents is another box is unwrapped (``\boxed{\boxed{5}}`` -> ``5``).

    Returns ``None`` if there is no box, or if the last box's braces never
    close.
    """
    if not isinstance(text, str):
        return None
    result: str | None = None
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            break
        content, end = _read_box_argument(text, m.end())
        if content is None:
            # Everything after an unclosed box is inside it: no later box exists.
            return None
        if end > m.end():
            result = content
        pos = max(end, m.end())
    for _ in range(_MAX_BOX_UNWRAP):  # \boxed{\boxed{5}} -> 5
        if result is None:
            break
        inner = _unwrap_whole_box(result.strip())
        if inner == result.strip():
            break
        result = inner
    return result


def _unwrap_whole_box(s: str) -> str:
    m = _BOX_RE.match(s)
    if m is None:
        return s
    content, end = _read_box_argument(s, m.end())
    if content is not None and end == len(s):
        return content.strip()
    return s


# ---------------------------------------------------------------------------
# split_reasoning
# ---------------------------------------------------------------------------

# The chain-of-thought tags of the official model's output format (one definition for the package:
# the curriculum writes them, the server's reasoning parser and split_reasoning read them).
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r]*\n")


def split_reasoning(text: str) -> tuple[str, str]:
    r"""Split a generation into ``(reasoning, answer_part)``.

    The rule, applied to the generation as a whole:

    1. If the text contains ``</think>``, the reasoning is everything before
       the *first* ``</think>`` and the answer part everything after it (as
       vLLM's ``deepseek_r1`` parser and ``sambay serve`` split it).  A
       leading ``<think>`` tag is removed from the reasoning; the tags are part
       of neither piece.
    2. Otherwise the text is cut into paragraphs at blank lines.  The answer
       part starts at the beginning of the paragraph that contains the last
       ``\boxed`` / ``\fbox`` command and runs to the end of the text; if there
       is no box, it is the last non-empty paragraph.  The reasoning is
       everything before the answer part.  A single-paragraph generation is
       therefore all answer part, with empty reasoning.

    Both pieces are stripped of surrounding whitespace.  Never raises; a
    non-string input gives ``("", "")``.
    """
    if not isinstance(text, str):
        return "", ""
    close = text.find(THINK_CLOSE)
    if close != -1:
        reasoning = text[:close].strip()
        if reasoning.startswith(THINK_OPEN):
            reasoning = reasoning[len(THINK_OPEN) :].strip()
        return reasoning, text[close + len(THINK_CLOSE) :].strip()

    body = text.rstrip()
    boxes = list(_BOX_RE.finditer(body))
    anchor = boxes[-1].start() if boxes else len(body)
    start = 0
    for brk in _PARAGRAPH_BREAK_RE.finditer(body):
        if brk.end() <= anchor:
            start = brk.end()
        else:
            break
    return body[:start].strip(), body[start:].strip()


# ---------------------------------------------------------------------------
# Grading
# ---------------------------------------------------------------------------


def _coerce(answer: object) -> str | None:
    """Strings as they are; numbers (dataset references stored as ints) as their text."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, (int, float, Fraction)) and not isinstance(answer, bool):
        return str(answer)
    return None


def grade(pairs: Sequence[tuple[str | None, str]], *, grader: Grader | None = None) -> list[bool | None]:
    """Verdicts for ``(prediction, reference)`` pairs, graded together on the worker pool:
    True (equivalent), False (not, or no prediction), None (the comparison timed out, twice)."""
    verdicts: list[bool | None] = [False] * len(pairs)
    todo, index = [], []
    for i, (prediction, reference) in enumerate(pairs):
        pred, ref = _coerce(prediction), _coerce(reference)
        if pred is not None and ref is not None and pred.strip() and ref.strip():
            todo.append((pred, ref))
            index.append(i)
    for i, verdict in zip(index, (grader or default_grader()).grade(todo)):
        verdicts[i] = verdict
    return verdicts


def answers_match(prediction: str | None, reference: str, *, grader: Grader | None = None) -> bool:
    """True if ``prediction`` is an answer equivalent to ``reference`` (see the module docstring);
    False otherwise, also when the comparison timed out (:func:`grade` tells that apart)."""
    return grade([(prediction, reference)], grader=grader)[0] is True


def majority_vote(answers: Sequence[str | None], *, grader: Grader | None = None) -> str | None:
    r"""The most common answer, equivalent answers counted together.

    Answers are clustered in order: each joins the first cluster whose representative (its
    first member) it matches (:func:`answers_match`, the answer as prediction), else starts
    one. The representative of the largest cluster is returned as it was given; ties go to
    the cluster that appeared first. ``None`` and blank answers are ignored (None when
    nothing is left). ``["1/2", "0.5", "3", "\\frac{1}{2}"]`` -> ``"1/2"``.
    """
    counts: dict[str, int] = {}
    for raw in answers:  # identical strings first: one comparison per distinct answer
        answer = _coerce(raw)
        if answer is not None and answer.strip():
            counts[answer] = counts.get(answer, 0) + 1
    clusters: list[list] = []  # [representative, count]
    for answer, count in counts.items():
        for cluster in clusters:
            if answers_match(answer, cluster[0], grader=grader):
                cluster[1] += count
                break
        else:
            clusters.append([answer, count])
    if not clusters:
        return None
    return max(clusters, key=lambda c: c[1])[0]  # max keeps the first of equal counts


def pass_at_1(correct: Sequence[bool]) -> float:
    """Mean of per-sample correctness flags (0.0 for none)."""
    return sum(1 for c in correct if c) / len(correct) if len(correct) else 0.0


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator of Chen et al. (2021): the probability that at least one
    of ``k`` samples drawn without replacement from ``n`` samples, ``c`` of them correct, is
    correct: ``1 - C(n - c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def maj_at_k(answers: Sequence[str | None], reference: str, *, grader: Grader | None = None) -> bool:
    """True if the majority vote over all of ``answers`` matches ``reference`` (``k`` is
    ``len(answers)``; pass the first ``k`` samples for a smaller ``k``)."""
    return answers_match(majority_vote(answers, grader=grader), reference, grader=grader)
