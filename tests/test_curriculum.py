"""Tests of the synthetic arithmetic curriculum (reasoning/curriculum.py)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from functools import lru_cache

import pytest

from reasoning.curriculum import (
    KINDS,
    QUESTION_TEMPLATES,
    WORD_TEMPLATE_COUNT,
    Problem,
    canonical_key,
    chat_prompt,
    generate_problems,
    make_problem,
    problem_key,
    split_of_key,
    training_texts,
    write_jsonl,
)

# Maximum reasoning length (characters) per kind; the generator must stay below.
MAX_REASONING_CHARS = {"add": 110, "sub": 110, "mul": 270, "word": 400}

# LHS: the maximal run of digits/operators/parens/spaces right before "=".
EQUATION = re.compile(r"([0-9+\-*() ]+)=\s*(\d+)")
BLOCK = re.compile(r"^(\d+) ([-+*]) (\d+): (.*) -> (\d+)(.*)$", re.M)
FINAL = re.compile(r"\nThe answer is \\boxed\{(\d+)\}\.$")
NUM = re.compile(r"\d+")


@lru_cache(maxsize=None)
def _sample(kind: str, n: int = 2000, seed: int = 7) -> tuple[Problem, ...]:
    return tuple(generate_problems(n, seed=seed, kinds=[kind]))


def _safe_eval(expr: str) -> int:
    assert re.fullmatch(r"[0-9+\-*() ]+", expr), expr
    return eval(expr, {"__builtins__": {}}, {})  # noqa: S307 - digits/operators only


def _check_equations(reasoning: str) -> int:
    """Assert every ``lhs = rhs`` in ``reasoning`` is true and every '=' is covered."""
    matches = list(EQUATION.finditer(reasoning))
    assert len(matches) == reasoning.count("="), reasoning
    for m in matches:
        lhs = m.group(1).strip()
        assert re.search(r"\d\s*[-+*]\s*\(?\d", lhs), (lhs, reasoning)
        assert _safe_eval(lhs) == int(m.group(2)), (m.group(0), reasoning)
    return len(matches)


def _check_columns(a: int, op: str, b: int, steps: str, result: int) -> None:
    """Re-run the column algorithm and compare with the written steps."""
    cols = steps.split(", ")
    if op == "*":
        x, d = a, b
        assert 0 <= d <= 9
        xs = [int(c) for c in reversed(str(x))]
        assert len(cols) == len(xs), steps
        carry = 0
        for i, (xi, col) in enumerate(zip(xs, cols)):
            v = xi * d + carry
            want = f"{xi}*{d}" + (f"+{carry}" if carry else "") + f"={v}"
            carry = v // 10
            if i < len(xs) - 1 and carry:
                want += f" carry {carry}"
            assert col == want, (steps, col, want)
        return
    da = [int(c) for c in reversed(str(a))]
    db = [int(c) for c in reversed(str(b))]
    width = max(len(da), len(db))
    da += [0] * (width - len(da))
    db += [0] * (width - len(db))
    assert len(cols) == width, steps
    carry = 0
    digits = []
    for i, (x, y, col) in enumerate(zip(da, db, cols)):
        if op == "+":
            v = x + y + carry
            want = f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={v}"
            carry = v // 10
            if i < width - 1 and carry:
                want += f" carry {carry}"
            digits.append(str(v) if i == width - 1 else str(v % 10))
        else:
            top = x if x - y - carry >= 0 else x + 10
            v = top - y - carry
            want = f"{top}-{y}" + ("-1" if carry else "") + f"={v}"
            carry = int(top != x)
            if carry:
                want += " borrow 1"
            digits.append(str(v))
        assert col == want, (steps, col, want)
    assert int("".join(reversed(digits))) == result


def _check_blocks(reasoning: str) -> None:
    blocks = list(BLOCK.finditer(reasoning))
    assert len(blocks) == reasoning.count("->"), reasoning
    for m in blocks:
        a, op, b, steps, result = int(m[1]), m[2], int(m[3]), m[4], int(m[5])
        assert _safe_eval(f"{a} {op} {b}") == result, m.group(0)
        _check_columns(a, op, b, steps, result)


def _final_expression(p: Problem) -> str:
    last = p.reasoning.splitlines()[-1]
    m = re.fullmatch(r"So (.+) = (\d+)\.", last)
    assert m, last
    assert m[2] == p.answer
    return m[1]


# ---------------------------------------------------------------------------


def test_347_times_28() -> None:
    p = make_problem("mul", (347, 28), template=0)
    assert p.question == "What is 347 * 28?"
    assert p.answer == "9716"
    assert p.kind == "mul"
    assert p.completion.endswith("\\boxed{9716}.")
    assert p.completion == "<think>\n" + p.reasoning + "\n</think>\n\nThe answer is \\boxed{9716}."
    assert p.reasoning.splitlines()[0] == "347 * 28:"
    assert "347 * 8: 7*8=56 carry 5, 4*8+5=37 carry 3, 3*8+3=27 -> 2776." in p.reasoning
    assert "so 347 * 20 = 6940." in p.reasoning
    assert p.reasoning.endswith("So 347 * 28 = 9716.")
    # swapped operands are restated in canonical (longer-first) order
    q = make_problem("mul", (28, 347), template=0)
    assert q.question == "What is 28 * 347?"
    assert q.reasoning == p.reasoning and q.answer == "9716"
    assert problem_key(p) == problem_key(q) == canonical_key("mul", "28 * 347")


def test_examples_of_each_kind() -> None:
    assert make_problem("sub", (5021, 786), template=1).question == "Compute 5021 - 786."
    assert make_problem("sub", (5021, 786)).answer == "4235"
    assert make_problem("sub", (1000, 999)).answer == "1"
    assert make_problem("add", (4827, 3596)).answer == "8423"
    w = make_problem("word", (23, 14, 95), template=0)
    assert w.question == (
        "A shop has 23 boxes with 14 pens each. It sells 95 pens. How many pens are left?"
    )
    assert w.answer == "227"
    assert w.reasoning.startswith("Plan: 23 * 14 - 95.\n")


@pytest.mark.parametrize("kind", ["add", "sub", "mul"])
def test_all_templates(kind: str) -> None:
    a, b = 5021, 786
    want = {"add": a + b, "sub": a - b, "mul": a * b}[kind]
    for t in range(len(QUESTION_TEMPLATES[kind])):
        p = make_problem(kind, (a, b), template=t)
        assert p.answer == str(want)
        assert sorted(map(int, NUM.findall(p.question))) == sorted((a, b))
    assert QUESTION_TEMPLATES[kind][0].startswith("What is {a} ")


def test_word_templates() -> None:
    r = random.Random(0)
    from reasoning import curriculum

    for t in range(WORD_TEMPLATE_COUNT):
        ops = curriculum._WORD_TEMPLATES[t].sample(r)
        p = make_problem("word", ops, template=t, rng=r)
        assert NUM.findall(p.question) == [str(o) for o in ops]
        assert int(p.answer) == _safe_eval(_final_expression(p)) >= 0


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        make_problem("sub", (3, 5))
    with pytest.raises(ValueError):
        make_problem("div", (3, 5))
    with pytest.raises(ValueError):
        make_problem("add", (3, 5), template=99)
    with pytest.raises(ValueError):
        make_problem("word", (3, 5), template=0)
    with pytest.raises(ValueError):
        make_problem("word", (2, 3, 7), template=0)  # 2 * 3 - 7 < 0
    with pytest.raises(ValueError):
        generate_problems(3, seed=0, split="dev")
    with pytest.raises(ValueError):
        generate_problems(3, seed=0, kinds=["pow"])


def test_determinism() -> None:
    a = generate_problems(300, seed=11)
    b = generate_problems(300, seed=11)
    c = generate_problems(300, seed=12)
    assert a == b
    assert a != c
    assert generate_problems(50, seed=11, split="test") == generate_problems(50, seed=11, split="test")
    # the global random state is neither used nor disturbed
    random.seed(0)
    before = random.random()
    random.seed(0)
    generate_problems(20, seed=5)
    assert random.random() == before
    assert [p.kind for p in a[:8]] == list(KINDS) * 2


def test_train_test_disjoint() -> None:
    train = generate_problems(20000, seed=0, split="train")
    test = generate_problems(2000, seed=1, split="test")
    train_keys = {problem_key(p) for p in train}
    test_keys = {problem_key(p) for p in test}
    assert all(split_of_key(k) == "train" for k in train_keys)
    assert all(split_of_key(k) == "test" for k in test_keys)
    assert not train_keys & test_keys
    assert not {p.question for p in train} & {p.question for p in test}
    assert len(test_keys) == len(test)  # unique within a call
    # the partition is about 10% / 90%
    keys = [canonical_key("add", f"{a} + {b}") for a in range(1, 60) for b in range(1, 60)]
    share = sum(split_of_key(k) == "test" for k in keys) / len(keys)
    assert 0.07 < share < 0.13


def test_default_test_set() -> None:
    test = generate_problems(500, seed=1234, split="test")
    assert len(test) == 500
    assert Counter(p.kind for p in test) == {k: 125 for k in KINDS}
    assert all(split_of_key(problem_key(p)) == "test" for p in test)


@pytest.mark.parametrize("kind", KINDS)
def test_answers_and_equations(kind: str) -> None:
    problems = _sample(kind)
    n_equations = 0
    for p in problems:
        assert p.kind == kind
        expr = _final_expression(p)
        value = _safe_eval(expr)
        assert p.answer == str(value) and value >= 0
        assert FINAL.search(p.completion)[1] == p.answer
        # the expression uses exactly the numbers of the question
        assert sorted(map(int, NUM.findall(p.question))) == sorted(map(int, NUM.findall(expr)))
        if kind == "sub":
            a, b = map(int, NUM.findall(expr))
            assert a >= b
        n_equations += _check_equations(p.reasoning)
        _check_blocks(p.reasoning)
    assert n_equations > 3 * len(problems)


def test_operand_ranges() -> None:
    for p in _sample("add"):
        assert all(1 <= int(x) <= 9999 for x in NUM.findall(p.question))
    for p in _sample("sub"):
        a, b = map(int, NUM.findall(_final_expression(p)))
        assert 0 <= b <= a <= 9999
    sizes = Counter()
    for p in _sample("mul"):
        a, b = map(int, NUM.findall(_final_expression(p)))
        assert len(str(a)) >= len(str(b)) and a <= 999 and b <= 99
        sizes[len(str(a)), len(str(b))] += 1
    assert sizes[3, 2] > 0.3 * len(_sample("mul"))
    assert len({p.question.split(" ")[0] for k in KINDS for p in _sample(k)}) > 8


@pytest.mark.parametrize("kind", KINDS)
def test_reasoning_length(kind: str) -> None:
    lengths = [len(p.reasoning) for p in _sample(kind)]
    assert max(lengths) <= MAX_REASONING_CHARS[kind]


def test_chat_format(tmp_path) -> None:
    p = make_problem("add", (12, 30))
    assert p.chat_text() == (
        "<|user|>What is 12 + 30?<|end|><|assistant|>" + p.completion + "<|end|>"
    )
    assert p.chat_text("Be brief.") == "<|system|>Be brief.<|end|>" + p.chat_text()
    assert chat_prompt(p.question) + p.completion + "<|end|>" == p.chat_text()
    assert p.completion.endswith("\nThe answer is \\boxed{42}.")
    assert training_texts([p, p], system="S") == [p.chat_text("S")] * 2

    problems = generate_problems(20, seed=3)
    path = tmp_path / "sub" / "eval.jsonl"
    write_jsonl(problems, path)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"problem": q.question, "answer": q.answer} for q in problems]
