"""Tests for reasoning.answers: extraction, normalization and answer equivalence."""

from __future__ import annotations

import time

import pytest

from reasoning.answers import (
    answers_match,
    extract_boxed,
    maj_at_k,
    majority_vote,
    normalize_answer,
    pass_at_1,
    split_reasoning,
)


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
    ("1.5e3", "1500"),
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
    (r"\text{5 cm}", "5"),
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
    (r"e^{i\pi}", "-1"),
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
    (r"10\%", "0.1"),
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
    ("(1,2)", "1,2"),
    (r"\{1\}", "1"),
    (r"\{1,2\}", r"\{1,3\}"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"),
    (r"x \in [1,2]", "[1,2]"),
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
    assert isinstance(normalize_answer(garbage), str)
    extract_boxed(garbage)
    split_reasoning(garbage)


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("9" * 5000, "1"),
        (r"x^{10^{10^{10}}}", "x"),
        (r"x^{10^{10^{10}}}", r"x^{10^{10^{10}}}+1"),
        (r"9^{9^{9}}", "1"),
        (r"2^{10^{100}}", r"4^{10^{100}}"),
        (r"(10^{10})!", "1"),
        ("100000000!", "1"),
        (r"\binom{10^{9}}{5}", "1"),
        (r"(x+y+z)^{1000}", r"(z+y+x)^{1000}+1"),
        ("+".join(f"x^{{{k}}}" for k in range(60)), r"\frac{x^{60}-1}{x-1}"),
    ],
    ids=_short_id,
)
def test_pathological_input_returns_quickly(prediction: str, reference: str) -> None:
    start = time.perf_counter()
    answers_match(prediction, reference)
    answers_match(reference, prediction)
    assert time.perf_counter() - start < 2.5


def test_slow_symbolic_comparison_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall-clock bound holds even if SymPy itself were to stall."""
    from reasoning import answers as module

    def stall(*_args: object) -> bool:
        time.sleep(3)
        return True

    monkeypatch.setattr(module, "_exprs_equal", stall)
    monkeypatch.setattr(module, "SYMBOLIC_TIMEOUT_S", 0.2)
    module._symbolic_match.cache_clear()
    start = time.perf_counter()
    assert not answers_match(r"\sqrt{11}+q", r"q+\sqrt{11}")
    assert time.perf_counter() - start < 1.5
    module._symbolic_match.cache_clear()


# ---------------------------------------------------------------------------
# normalize_answer
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (r"\left( 1, 2 \right)", "(1,2)"),
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\frac34", r"\frac{3}{4}"),
        (r"\frac\pi2", r"\frac{\pi}{2}"),
        (r"\sqrt2", r"\sqrt{2}"),
        (r"10\text{ cm}^2", "10"),
        (r"\text{Yes}", "Yes"),
        (r"3\text{ and }5", "3,5"),
        ("1,000,000", "1000000"),
        ("1,0000", "1,0000"),
        ("1,000.5", "1000.5"),
        (r"\$5", "5"),
        (r"50\%", "50"),
        (r"90^\circ", "90"),
        (r"x = \frac34", r"\frac{3}{4}"),
        (r"\pi r^2", r"\pi r^2"),
        ("5.", "5"),
        ("{5}", "5"),
        ("{1}{2}", "{1}{2}"),
        (r"\text{(C)}", "C"),
        (r"\!1\,000", "1000"),
        (r"\boxed{7}", "7"),
        ("\u03c0/2", r"\pi/2"),
        ("\u22123", "-3"),
    ],
)
def test_normalize_answer(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


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
