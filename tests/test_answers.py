"""Tests for reasoning.answers and reasoning.grading: extraction, math-verify grading (bounded,
deterministic, in a worker pool), majority vote and the scores."""

from __future__ import annotations

import math
import os
import signal
import threading
import time

import pytest
from math_verify import parse, verify

from reasoning.answers import (
    answers_match,
    extract_boxed,
    grade,
    maj_at_k,
    majority_vote,
    pass_at_1,
    pass_at_k,
    split_reasoning,
)
from reasoning.grading import Grader, prepare_answer


def _short_id(value: object) -> str:
    """Readable pytest ids for long LaTeX / pathological strings."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...<{len(text)} chars>"


# ---------------------------------------------------------------------------
# answers_match: (prediction, reference) tables
# ---------------------------------------------------------------------------

EQUIVALENT = [
    # identical up to formatting
    ("5", "5"),
    ("(1,2)", "(1, 2)"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    (r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (r"\tfrac{3}{4}", r"\frac{3}{4}"),
    (r"$\frac{3}{4}$", r"\frac{3}{4}"),
    (r"\boxed{7}", "7"),
    ("7.", "7"),
    (r"\{1,\!2\}", r"\{1,2\}"),
    # numbers written differently
    ("0.5", r"\frac{1}{2}"),
    ("1/2", r"\frac{1}{2}"),
    (r"\frac34", "0.75"),
    (r"\frac{2}{4}", r"\frac{1}{2}"),
    ("-0.5", r"-\frac{1}{2}"),
    (r"\frac{-1}{2}", r"-\frac12"),
    (".5", "1/2"),
    ("3.0", "3"),
    ("0.333333333", r"\frac{1}{3}"),
    (r"2^{-1}", "0.5"),
    # thousands separators, percent, units, degrees, currency
    ("1,000", "1000"),
    ("1{,}000", "1000"),
    (r"1\,000", "1000"),
    ("1,000,000", "1000000"),
    (r"10\%", "10"),
    ("50%", "50"),
    (r"\$1,000", "1000"),
    (r"30^\circ", "30"),
    (r"30^{\circ}", "30"),
    (r"10\text{ cm}", "10"),
    (r"10 \text{cm}^2", "10"),
    ("5 inches", "5"),
    (r"5\,\mathrm{m}", "5"),
    # radicals, pi and implicit multiplication
    (r"\frac{\sqrt{3}}{2}", r"\sqrt{3}/2"),
    (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"\sqrt2", r"\sqrt{2}"),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}"),
    (r"4\sqrt{2}+2", r"2+\sqrt{32}"),
    (r"\sqrt{2}\cdot\sqrt{3}", r"\sqrt{6}"),
    (r"\sqrt[3]{8}", "2"),
    (r"\sqrt{3+2\sqrt{2}}", r"1+\sqrt{2}"),
    (r"\pi/2", r"\frac{\pi}{2}"),
    (r"\frac\pi2", r"\frac{\pi}{2}"),
    (r"2\pi r^2", r"2 r^2 \pi"),
    (r"\sqrt{2}", "1.41421356237"),
    (r"2 \times 10^3", "2000"),
    (r"2^{2^{3}}", "256"),
    # other functions and constants
    (r"\binom{5}{2}", "10"),
    ("5!", "120"),
    (r"|-3|", "3"),
    (r"\log_2 8", "3"),
    (r"\arctan 1", r"\frac{\pi}{4}"),
    (r"\tan^{-1}(1)", r"\frac{\pi}{4}"),
    (r"\cos\frac{\pi}{3}", r"\frac12"),
    ("1+2i", "2i+1"),
    (r"\infty", r"+\infty"),
    # expressions with variables
    (r"x^2+2x+1", "(x+1)^2"),
    (r"\frac{1}{x}+\frac{1}{y}", r"\frac{x+y}{xy}"),
    (r"\sin^2 x + \cos^2 x", "1"),
    (r"0.5x", r"\frac{x}{2}"),
    (r"\alpha+\beta", r"\beta+\alpha"),
    ("x_1 + x_2", "x_2+x_1"),
    # assignments and equations
    ("x=3", "3"),
    ("x = 3", "3"),
    (r"k = \frac{1}{2}", "0.5"),
    (r"\theta = \frac{\pi}{4}", r"\frac{\pi}{4}"),
    ("y = 2x+3", "2x+3"),
    ("x+y=1", "1=y+x"),
    # tuples, intervals, sets, lists
    ("(0.5, 2)", r"\left(\frac12, 2\right)"),
    ("[1, 3)", "[1,3)"),
    (r"(-\infty, 3]", r"(-\infty,3]"),
    (r"(1,2)\cup(3,4)", r"(3,4)\cup(1,2)"),
    (r"\{2, 1\}", r"\{1,2\}"),
    ("1, 2, 3", "3,2,1"),
    ("3, 5", r"\{5, 3\}"),
    (r"3 \text{ and } 5", r"\{3,5\}"),
    ("x=1, y=2", "1, 2"),
    (r"\pm\sqrt{2}", r"\sqrt{2}, -\sqrt{2}"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    (r"\begin{pmatrix} 0.5 & 1 \end{pmatrix}", r"\begin{pmatrix}\frac12 & 1\end{pmatrix}"),
    # words and multiple choice
    ("Yes", r"\text{yes}"),
    (r"\text{(B)}", "B"),
    ("(C)", "C"),
    (r"\emptyset", r"\varnothing"),
    (r"x \le 3", r"x\leq 3"),
    # huge but harmless
    ("9" * 5000, "9" * 5000),
]

NOT_EQUIVALENT = [
    # near misses
    ("0.33", r"\frac13"),
    ("0.3333", r"\frac13"),
    ("12", "21"),
    (r"\sqrt{3}", "3"),
    (r"2\pi", r"\pi"),
    ("1000", "1,0000"),
    ("1000000", "1000001"),
    ("10^6", "1000001"),
    (r"\sqrt{2}", "1.414"),
    (r"\frac{1}{2}", "1/3"),
    ("-5", "5"),
    (r"\frac{\pi}{6}", r"30^\circ"),
    (r"\sqrt{x^2}", "x"),
    (r"(x+1)^{60}", r"(1+x)^{60}+1"),
    ("A", "B"),
    ("Yes", "No"),
    # structure must agree
    ("(2,1)", "(1,2)"),
    ("[1, 3)", "[1, 3]"),
    ("(1,3)", "[1,3]"),
    ("(1,2,3)", "(1,2)"),
    (r"\{1,2\}", r"\{1,3\}"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"),
    # empty / undefined / garbage
    ("", "0"),
    (" ", "0"),
    ("", ""),
    ("1/0", "2/0"),
    ("garbage ??", "0"),
    ("__import__('os').system('true')", "0"),
    (r"\frac{1}{2", r"\frac{1}{2}"),
    ("9" * 5000, "9" * 4999 + "8"),
]


@pytest.mark.parametrize(("prediction", "reference"), EQUIVALENT, ids=_short_id)
def test_equivalent_answers_match(prediction: str, reference: str) -> None:
    assert answers_match(prediction, reference)


@pytest.mark.parametrize(("prediction", "reference"), EQUIVALENT, ids=_short_id)
def test_matching_is_symmetric(prediction: str, reference: str) -> None:
    assert answers_match(reference, prediction)


@pytest.mark.parametrize(("prediction", "reference"), NOT_EQUIVALENT, ids=_short_id)
def test_different_answers_do_not_match(prediction: str, reference: str) -> None:
    assert not answers_match(prediction, reference)


def test_none_never_matches() -> None:
    assert not answers_match(None, "0")
    assert not answers_match(None, "")
    assert not answers_match("0", None)  # type: ignore[arg-type]


def test_numeric_reference_is_accepted() -> None:
    assert answers_match("42", 42)  # type: ignore[arg-type]
    assert not answers_match("42", True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "garbage",
    [
        "{" * 5000,
        "}" * 5000,
        "\\frac" * 2000,
        "\\sqrt" * 500 + "2",
        "x^" * 500 + "2",
        "(" * 900 + ")" * 900,
        "\\text{" * 900 + "}" * 900,
        "\\boxed{" * 3000 + "}" * 3000,
        "|" * 999,
        "\\begin{pmatrix}",
        "\\\\\\\\&&&",
        "1," * 3000,
        "a" * 100_000,
        "\x00\x01\ufffd",
        "\\left(\\right.",
        "= = =",
    ],
    ids=_short_id,
)
def test_garbage_input_never_raises(garbage: str) -> None:
    assert answers_match(garbage, "1") is False
    extract_boxed(garbage)
    split_reasoning(garbage)


PATHOLOGICAL = [
    ("9" * 5000, "1"),
    (r"x^{10^{10^{10}}}", "x"),
    (r"9^{9^{9^{9}}}", "1"),
    (r"2^{10^{100}}", r"4^{10^{100}}"),
    (r"(10^{10})!", "1"),
    ("100000000!", "1"),
    (r"\binom{10^{9}}{5}", "1"),
    (r"(x+y+z)^{1000}", r"(z+y+x)^{1000}+1"),
]


def test_pathological_input_is_bounded() -> None:
    """Each comparison is cut off (at most the timeout, then twice it on the retry) and none is True."""
    grader = Grader(workers=2, timeout=1.0)
    start = time.perf_counter()
    verdicts = grade(PATHOLOGICAL, grader=grader)
    assert time.perf_counter() - start < 60
    assert True not in verdicts
    grader.close()


# (prediction, reference, verdict): what math-verify itself says, called directly, and the right answer.
AGREEMENT = [
    # fractions
    (r"\frac{1}{2}", "0.5", True), (r"\dfrac{3}{4}", r"\frac{3}{4}", True), ("6/8", r"\frac{3}{4}", True),
    (r"\frac{2}{3}", "0.666667", True), (r"\frac{2}{3}", "0.67", False), (r"-\frac{1}{3}", r"\frac{-1}{3}", True),
    (r"\frac{7}{2}", r"3\frac{1}{2}", True), (r"\frac{1}{3}", r"\frac{1}{4}", False), ("1/2", "2/1", False),
    (r"\tfrac{5}{10}", "1/2", True),
    # radicals
    (r"2\sqrt{2}", r"\sqrt{8}", True), (r"\frac{\sqrt{3}}{2}", r"\frac{1}{2}\sqrt{3}", True),
    (r"\frac{1}{\sqrt{2}}", r"\frac{\sqrt{2}}{2}", True), (r"\sqrt[3]{27}", "3", True), (r"\sqrt{2}", "1.414", False),
    (r"3\sqrt{5}", r"\sqrt{45}", True), (r"\sqrt{3}", r"\sqrt{2}", False), (r"\sqrt{12}", r"2\sqrt{3}", True),
    (r"5+2\sqrt{6}", r"(\sqrt{2}+\sqrt{3})^2", True),
    # percentages
    (r"25\%", "25", True), (r"25\%", "0.25", True), ("50%", r"50\%", True), (r"12.5\%", "0.125", True),
    (r"30\%", "0.3", True), (r"25\%", "30", False),
    # intervals
    ("[1, 3)", "[1,3)", True), ("[1, 3)", "[1, 3]", False), (r"(-\infty, 2]", r"(-\infty,2]", True),
    ("(0, 1)", "[0, 1]", False), (r"(-\infty, 0) \cup (1, \infty)", r"(1,\infty)\cup(-\infty,0)", True),
    (r"[2, 5]", r"[2, 6]", False), (r"\left[ \frac{1}{2}, 1 \right)", "[0.5, 1)", True),
    # sets and tuples
    (r"\{1, 2, 3\}", r"\{3, 2, 1\}", True), (r"\{1, 2\}", r"\{1, 3\}", False), ("(1, 2)", "(1,2)", True),
    ("(2, 1)", "(1, 2)", False), (r"\{-2, 3\}", r"\{3,-2\}", True), ("(3, -1)", r"\left(3, -1\right)", True),
    ("(1, 2, 3)", "(1, 2)", False), ("2, 3", r"\{2,3\}", True),
    # matrices
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", True),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{pmatrix}1&2\\4&3\end{pmatrix}", False),
    (r"\begin{bmatrix} 0.5 \\ 1 \end{bmatrix}", r"\begin{pmatrix}\frac12\\1\end{pmatrix}", True),
    (r"\begin{pmatrix} 2 \\ -1 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", False),
    # units
    (r"10\text{ cm}", "10", True), (r"5\,\mathrm{m}", "5", True), ("12 inches", "12", True),
    (r"3\text{ meters}", "4", False), (r"30^\circ", "30", True), (r"\$1,000", "1000", True), (r"90^{\circ}", "90", True),
    (r"18 \text{ square units}", "18", True),
    # text answers and choices
    (r"\text{Yes}", "yes", True), (r"\text{yes}", r"\text{no}", False), ("(C)", "C", True), ("B", "C", False),
    (r"\text{even}", r"\text{Even}", True), (r"\textbf{(A)}", "A", True),
    # expressions, equations, constants
    ("x^2+2x+1", "(x+1)^2", True), (r"\frac{x+1}{2}", r"\frac{x}{2}+\frac{1}{2}", True), ("x=3", "3", True),
    ("y = 2x + 3", "2x+3", True), (r"\pi/2", r"\frac{\pi}{2}", True), (r"2\pi", r"\pi", False),
    (r"\binom{5}{2}", "10", True), ("5!", "120", True), (r"\log_2 8", "3", True), ("1,000", "1000", True),
    ("1000000", "1000001", False), ("-5", "5", False), (r"\infty", r"+\infty", True), (r"x \le 3", r"x \leq 3", True),
    (r"\sin^2 x + \cos^2 x", "1", True), (r"a+b", r"b+a", True),
]


@pytest.mark.parametrize(("prediction", "reference", "verdict"), AGREEMENT, ids=_short_id)
def test_agrees_with_math_verify(prediction: str, reference: str, verdict: bool) -> None:
    assert len(AGREEMENT) >= 60
    direct = verify(parse(f"${reference}$"), parse(f"${prediction}$"))  # math-verify in this (main) thread
    assert direct == verdict
    assert answers_match(prediction, reference) == verdict


@pytest.mark.parametrize(("raw", "prepared", "prediction", "reference"), [
    # math-verify reads \varnothing as a variable named "varnothing"
    (r"\varnothing", r"\emptyset", r"\varnothing", r"\emptyset"),
    # ... a thin space between digit groups as a product (1\,000 -> 1*0)
    (r"1\,000\,000", "1000000", r"1\,000", "1000"),
    (r"2\,5", r"2\,5", r"1\,000", "1000"),  # not a digit group: left alone
    # ... \frac with a brace-less control-word argument as garbage
    (r"\frac\pi2", r"\frac{\pi}{2}", r"\frac\pi2", r"\frac{\pi}{2}"),
    (r"\dfrac\pi{3}", r"\dfrac{\pi}{3}", r"\frac\pi2", r"\frac{\pi}{2}"),
    (r"\frac12+\frac{x}{y}", r"\frac12+\frac{x}{y}", r"\frac\pi2", r"\frac{\pi}{2}"),  # math-verify reads these
])
def test_prepare_answer_fixes_what_math_verify_misreads(raw: str, prepared: str, prediction: str,
                                                        reference: str) -> None:
    assert prepare_answer(raw) == prepared
    assert not verify(parse(f"${reference}$"), parse(f"${prediction}$"))  # why the rewrite exists
    assert answers_match(prediction, reference)


def test_identical_answers_match_without_parsing() -> None:
    """math-verify cannot parse a number past Python's 4300-digit int limit: it would call it unequal to itself."""
    big = "9" * 5000
    assert not verify(parse(f"${big}$"), parse(f"${big}$"))
    assert answers_match(big, big)
    assert not answers_match(big, "9" * 4999 + "8")


def test_a_timeout_is_reported_retried_and_never_cached() -> None:
    grader = Grader(workers=1, timeout=1.0)
    slow = (r"9^{9^{9^{9}}}", "1")
    start = time.perf_counter()
    assert grade([slow, ("2", "2.0")], grader=grader) == [None, True]
    assert time.perf_counter() - start < 1.0 + 2.0 + 8  # first try + the retry with twice the time + start-ups
    assert grader.timeouts == 1
    assert answers_match(*slow, grader=grader) is False  # counts as not matching ...
    assert grader.timeouts == 2  # ... but was graded again, not answered from a cache
    assert ("2", "2.0") in grader._cache and slow not in grader._cache
    grader.close()


def test_a_worker_that_does_not_answer_is_killed_and_replaced() -> None:
    """A worker stuck where math-verify's alarm cannot reach (inside one C call; here: stopped by
    SIGSTOP) is killed at the deadline and the comparison retried in a fresh one."""
    grader = Grader(workers=1, timeout=1.0)
    assert grade([("1", "1.0")], grader=grader) == [True]  # starts the worker
    (worker,) = grader._pool
    os.kill(worker.proc.pid, signal.SIGSTOP)
    start = time.perf_counter()
    assert grade([("3", "3.0")], grader=grader) == [True]
    assert 1.0 <= time.perf_counter() - start < 10
    assert worker.proc.poll() is not None and grader._pool[0] is not worker
    grader.close()


def test_grading_works_from_threads() -> None:
    """math-verify's own timeouts refuse to run outside the main thread; the pool does not care."""
    with pytest.raises(ValueError, match="threaded"):
        errors: list[BaseException] = []

        def direct() -> None:
            try:
                verify(parse("$1$"), parse("$1$"), raise_on_error=True)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)

        t = threading.Thread(target=direct)
        t.start()
        t.join()
        raise errors[0]
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(answers_match("0.5", r"\frac12"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4


def test_a_batch_of_1000_with_a_power_tower_is_bounded_and_deterministic() -> None:
    references = [str(n) for n in range(250)] * 4
    predictions = []
    for n, ref in enumerate(references):
        forms = [ref, f"{ref}.0", rf"\frac{{{2 * int(ref)}}}{{2}}", str(int(ref) + 1), rf"\boxed{{{ref}}}",
                 rf"{ref}\%", rf"x = {ref}", rf"\sqrt{{{int(ref) ** 2}}}"]
        predictions.append(forms[n % len(forms)])
    predictions[500] = r"2^{2^{2^{2^{2^{2^{2}}}}}}"  # a power tower no machine finishes
    pairs = list(zip(predictions, references))
    runs = []
    for _ in range(2):
        grader = Grader(workers=2, timeout=2.0)
        start = time.perf_counter()
        runs.append(grade(pairs, grader=grader))
        assert time.perf_counter() - start < 240
        grader.close()
    assert runs[0] == runs[1]
    assert runs[0][500] is None and runs[0].count(None) == 1
    expected = [str(int(r) + 1) != p for p, r in pairs]
    assert [v for i, v in enumerate(runs[0]) if i != 500] == [e for i, e in enumerate(expected) if i != 500]


# ---------------------------------------------------------------------------
# extract_boxed
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the answer is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{x^{2}}", "x^{2}"),
        (r"first \boxed{1} then \boxed{2}", "2"),
        (r"\boxed{\frac{1}{2}", None),
        (r"\boxed{1} and finally \boxed{2", None),
        ("no box at all", None),
        ("", None),
        (r"\boxed{a}{b}", "a"),
        (r"\boxed 5.", "5"),
        (r"$\boxed 42$", "42"),
        (r"\fbox{7}", "7"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed{\boxed{5}}", "5"),
        (r"\boxed{\text{(A)}}", r"\text{(A)}"),
        (r"\boxed{}", ""),
        (r"\boxedfoo{3}", None),
        ("\\boxed", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected


# ---------------------------------------------------------------------------
# split_reasoning
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        (
            "<think>Let me think.\n\nStill thinking.</think>\n\nThe answer is $\\boxed{3}$.",
            "Let me think.\n\nStill thinking.",
            "The answer is $\\boxed{3}$.",
        ),
        ("No opening tag</think>Answer: 4", "No opening tag", "Answer: 4"),
        ("<think>only thinking</think>", "only thinking", ""),
        ("a</think>b</think>c", "a", "b</think>c"),  # the first </think> ends the reasoning, as the server splits
        (
            "Step 1.\n\nStep 2.\n\nTherefore the answer is\n\\boxed{4}.\n\nI hope that helps.",
            "Step 1.\n\nStep 2.",
            "Therefore the answer is\n\\boxed{4}.\n\nI hope that helps.",
        ),
        ("Step 1.\n\nStep 2.\n\nFinal: 7\n\n", "Step 1.\n\nStep 2.", "Final: 7"),
        ("a single paragraph \\boxed{1}", "", "a single paragraph \\boxed{1}"),
        ("a \\boxed{1}\n\nb \\boxed{2}\n\nc", "a \\boxed{1}", "b \\boxed{2}\n\nc"),
        ("p1\r\n\r\np2 \\boxed{9}", "p1", "p2 \\boxed{9}"),
        ("", "", ""),
    ],
)
def test_split_reasoning(text: str, reasoning: str, answer: str) -> None:
    assert split_reasoning(text) == (reasoning, answer)


def test_split_then_extract_round_trip() -> None:
    generation = "<think>2+2 is 4, so...</think>\nThe answer is $\\boxed{4}$."
    _, answer_part = split_reasoning(generation)
    assert answers_match(extract_boxed(answer_part), "4")


# ---------------------------------------------------------------------------
# majority_vote and metrics
# ---------------------------------------------------------------------------


def test_majority_vote_clusters_equivalent_forms() -> None:
    winner = majority_vote(["1/2", "0.5", "3", "\\frac{1}{2}"])
    assert winner == "1/2"
    assert answers_match(winner, "0.5")


def test_majority_vote_ignores_none_and_blank() -> None:
    assert majority_vote([None, "", "  ", "4", None]) == "4"
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_majority_vote_tie_goes_to_first_occurrence() -> None:
    assert majority_vote(["3", "4"]) == "3"
    assert majority_vote([None, "4", "3", "3", "4.0"]) == "4"


def test_majority_vote_counts_clusters_not_strings() -> None:
    answers = ["7", "\\frac{14}{2}", "x=7", "8", "8.0", "9"]
    assert majority_vote(answers) == "7"


def test_pass_at_1() -> None:
    assert pass_at_1([True, False, True, True]) == pytest.approx(0.75)
    assert pass_at_1([False]) == 0.0
    assert pass_at_1([]) == 0.0


def test_maj_at_k() -> None:
    assert maj_at_k(["0.5", "\\frac12", "2"], "1/2")
    assert not maj_at_k(["2", "2", "\\frac12"], "1/2")
    assert not maj_at_k([None, None], "1/2")


def test_pass_at_k() -> None:
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 4, 1) == 1.0 and pass_at_k(4, 3, 2) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 1 - 3/6
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(4, 1, 5)


def test_a_worker_that_cannot_start_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken installation (here: the worker script missing) must not look like "every comparison
    timed out": the pool says that its worker did not start, with the worker's last words."""
    import reasoning.grading as grading

    monkeypatch.setattr(grading, "__file__", grading.__file__ + ".missing.py")
    with pytest.raises(RuntimeError, match="did not start.*can't open file"):
        grade([("1", "2")], grader=Grader(workers=1))
