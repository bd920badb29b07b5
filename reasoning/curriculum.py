"""Synthetic step-by-step arithmetic curriculum for the small bundled SambaY model.

The package trains a tiny SambaY model on the problems produced here, so every
worked solution is short, fully mechanical and made of *local* steps that a
few-million-parameter model can copy:

* The first thing a solution does is restate the operands in a canonical
  ``a op b`` form (word problems first write a ``Plan:`` expression).
* Column algorithms run least-significant digit first. Each column is one
  small equation such as ``2+9+1=12 carry 1`` (addition), ``12-8-1=3 borrow 1``
  (subtraction) or ``4*8+5=37 carry 3`` (multiplication by a digit). The
  incoming carry/borrow is written as ``+c`` / ``-1`` only when it is non-zero;
  the outgoing one is written as ``carry c`` / ``borrow 1`` only when it is
  non-zero. Shorter operands are padded with ``0`` digits.
* A column line ends with ``-> r``: the last column's value followed by the
  units digits of the earlier columns in reverse order (leading zeros dropped
  for subtraction).
* Multiplication ``x * y`` (``x`` the operand with more digits) takes one
  partial product per non-zero digit of ``y``, shifts it
  (``so 347 * 20 = 6940``) and adds the partial products with the addition
  algorithm.
* Every solution ends with ``So <expression> = <answer>.``

Example (``What is 347 * 28?``)::

    347 * 28:
    347 * 8: 7*8=56 carry 5, 4*8+5=37 carry 3, 3*8+3=27 -> 2776.
    347 * 2: 7*2=14 carry 1, 4*2+1=9, 3*2=6 -> 694, so 347 * 20 = 6940.
    2776 + 6940: 6+0=6, 7+4=11 carry 1, 7+9+1=17 carry 1, 2+6+1=9 -> 9716.
    So 347 * 28 = 9716.

The only ``=`` signs in a solution belong to arithmetic equations that are
true, so a checker can re-evaluate all of them.

Problem kinds (see :data:`KINDS`):

* ``add``  -- 1 to 4 digits + 1 to 4 digits.
* ``sub``  -- 1 to 4 digits minus a smaller-or-equal number (result >= 0).
* ``mul``  -- up to 3 digits x up to 2 digits (e.g. ``347 * 28``).
* ``word`` -- 2-3 step word problems over small numbers (several templates,
  varied nouns and names) reduced to the three operations above.

Train/test partition: every problem has a canonical key
``"<kind>:<expression>"`` computed from its arithmetic only (question wording,
nouns and names are ignored; the operands of a lone ``+`` or ``*`` are sorted,
so ``28 * 347`` and ``347 * 28`` share one key). A problem belongs to the
``test`` split iff ``int(sha256(key).hexdigest()[:16], 16) % 10 == 0``
(about 10% of the problem space), otherwise to ``train``. The two splits can
therefore never share a problem, whatever the seeds. The default held-out
evaluation set is ``generate_problems(500, seed=1234, split="test")``.

Chat format (Phi): :meth:`Problem.chat_text` gives
``[<|system|>{system}<|end|>]<|user|>{question}<|end|><|assistant|>{completion}<|end|>``
and :attr:`Problem.completion` is
``"<think>\\n{reasoning}\\n</think>\\n\\nThe answer is \\boxed{answer}."``: the worked steps
inside ``<think>...</think>``, then the final answer, the form of Phi-4-mini-flash-reasoning
(a server's reasoning parser splits the two at ``</think>``).

Everything here is deterministic and standard-library only.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import string
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, Union

from .answers import THINK_CLOSE, THINK_OPEN

__all__ = [
    "KINDS",
    "SPLITS",
    "TEST_MODULUS",
    "QUESTION_TEMPLATES",
    "WORD_TEMPLATE_COUNT",
    "SYSTEM_TAG",
    "USER_TAG",
    "ASSISTANT_TAG",
    "END_TAG",
    "THINK_OPEN",
    "THINK_CLOSE",
    "Problem",
    "chat_prompt",
    "make_problem",
    "generate_problems",
    "canonical_key",
    "split_of_key",
    "problem_key",
    "write_jsonl",
    "training_texts",
    "default_test_set",
]

KINDS: tuple[str, ...] = ("add", "sub", "mul", "word")
"""All problem kinds, in the order :func:`generate_problems` cycles through them."""

SPLITS: tuple[str, ...] = ("train", "test")
"""Valid values of the ``split`` argument."""

TEST_MODULUS: int = 10
"""A key is held out (``test``) iff its hash is ``0`` modulo this number."""

SYSTEM_TAG = "<|system|>"
USER_TAG = "<|user|>"
ASSISTANT_TAG = "<|assistant|>"
END_TAG = "<|end|>"

_MAX_ATTEMPTS_PER_PROBLEM = 2000

# An arithmetic expression: an int, or (op, left, right) with op in "+-*".
Expr = Union[int, tuple]


# --------------------------------------------------------------------------
# Problem record and chat formatting
# --------------------------------------------------------------------------


def chat_prompt(question: str, system: str | None = None) -> str:
    """Return the Phi chat prompt for ``question`` up to and including ``<|assistant|>``.

    This is the prefix a model is conditioned on at inference time; the
    training text of a :class:`Problem` is this prompt followed by its
    completion and ``<|end|>``.
    """
    prefix = f"{SYSTEM_TAG}{system}{END_TAG}" if system is not None else ""
    return f"{prefix}{USER_TAG}{question}{END_TAG}{ASSISTANT_TAG}"


@dataclass(frozen=True)
class Problem:
    """One worked arithmetic problem.

    Attributes:
        question: natural-language question, e.g. ``"What is 347 * 28?"``.
        reasoning: the worked chain of thought (see the module docstring),
            ending with ``"So <expression> = <answer>."``.
        answer: the final non-negative integer as a decimal string.
        kind: one of :data:`KINDS`.
    """

    question: str
    reasoning: str
    answer: str
    kind: str

    @property
    def completion(self) -> str:
        """Assistant text: ``"<think>\\n{reasoning}\\n</think>\\n\\nThe answer is \\boxed{answer}."``."""
        return f"{THINK_OPEN}\n{self.reasoning}\n{THINK_CLOSE}\n\nThe answer is \\boxed{{{self.answer}}}."

    def prompt(self, system: str | None = None) -> str:
        """Chat prompt for this problem's question (see :func:`chat_prompt`)."""
        return chat_prompt(self.question, system)

    def chat_text(self, system: str | None = None) -> str:
        """Full training string in the Phi chat format.

        ``<|user|>{question}<|end|><|assistant|>{completion}<|end|>``, prefixed
        by ``<|system|>{system}<|end|>`` when ``system`` is not ``None``.
        """
        return f"{self.prompt(system)}{self.completion}{END_TAG}"


# --------------------------------------------------------------------------
# Column algorithms
# --------------------------------------------------------------------------


def _digits(n: int) -> list[int]:
    """Decimal digits of ``n``, least significant first."""
    return [int(c) for c in reversed(str(n))]


def _padded(a: int, b: int) -> tuple[list[int], list[int]]:
    """Digits of ``a`` and ``b`` (LSB first), zero-padded to a common width."""
    da, db = _digits(a), _digits(b)
    width = max(len(da), len(db))
    return da + [0] * (width - len(da)), db + [0] * (width - len(db))


def _add_line(a: int, b: int) -> str:
    """``"a + b: <columns> -> a+b."``: columnar addition, LSB first."""
    da, db = _padded(a, b)
    steps: list[str] = []
    carry = 0
    for i, (x, y) in enumerate(zip(da, db)):
        total = x + y + carry
        step = f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}"
        carry = total // 10
        if i < len(da) - 1 and carry:
            step += f" carry {carry}"
        steps.append(step)
    return f"{a} + {b}: {', '.join(steps)} -> {a + b}."


def _sub_line(a: int, b: int) -> str:
    """``"a - b: <columns> -> a-b."``: columnar subtraction with borrows, LSB first."""
    if not 0 <= b <= a:
        raise ValueError(f"subtraction needs 0 <= b <= a, got {a} - {b}")
    da, db = _padded(a, b)
    steps: list[str] = []
    borrow = 0
    for x, y in zip(da, db):
        top, borrow_out = (x, 0) if x - y - borrow >= 0 else (x + 10, 1)
        diff = top - y - borrow
        step = f"{top}-{y}" + ("-1" if borrow else "") + f"={diff}"
        if borrow_out:
            step += " borrow 1"
        steps.append(step)
        borrow = borrow_out
    return f"{a} - {b}: {', '.join(steps)} -> {a - b}."


def _mul_digit_steps(x: int, d: int) -> str:
    """Column steps of ``x * d`` for a single digit ``d`` (LSB first)."""
    digits = _digits(x)
    steps: list[str] = []
    carry = 0
    for i, xi in enumerate(digits):
        value = xi * d + carry
        step = f"{xi}*{d}" + (f"+{carry}" if carry else "") + f"={value}"
        carry = value // 10
        if i < len(digits) - 1 and carry:
            step += f" carry {carry}"
        steps.append(step)
    return ", ".join(steps)


def _mul_order(a: int, b: int) -> tuple[int, int]:
    """Canonical operand order for multiplication: more digits first (stable on ties)."""
    return (b, a) if len(str(b)) > len(str(a)) else (a, b)


def _mul_lines(a: int, b: int) -> list[str]:
    """Lines of the long multiplication ``x * y`` (``x`` the longer operand).

    A one-digit multiplier gives a single column line. Otherwise a header line
    ``"x * y:"`` is followed by one line per non-zero digit of ``y`` (shifted
    by its place value) and the additions of the partial products.
    """
    x, y = _mul_order(a, b)
    if y < 10:
        return [f"{x} * {y}: {_mul_digit_steps(x, y)} -> {x * y}."]
    lines = [f"{x} * {y}:"]
    partials: list[int] = []
    for place, d in enumerate(_digits(y)):
        if d == 0:
            continue
        line = f"{x} * {d}: {_mul_digit_steps(x, d)} -> {x * d}"
        if place:
            scale = 10**place
            line += f", so {x} * {d * scale} = {x * d * scale}"
        lines.append(line + ".")
        partials.append(x * d * 10**place)
    running = partials[0]
    for p in partials[1:]:
        lines.append(_add_line(running, p))
        running += p
    return lines


# --------------------------------------------------------------------------
# Expressions
# --------------------------------------------------------------------------

_PREC = {"+": 1, "-": 1, "*": 2}


def _evaluate(e: Expr) -> int:
    if isinstance(e, int):
        return e
    op, left, right = e
    lv, rv = _evaluate(left), _evaluate(right)
    return lv + rv if op == "+" else lv - rv if op == "-" else lv * rv


def _render(e: Expr, parent_op: str | None = None, is_right: bool = False) -> str:
    """Render with the minimal parentheses (``a * b + c``, ``(a + b) * c``)."""
    if isinstance(e, int):
        return str(e)
    op, left, right = e
    text = f"{_render(left, op)} {op} {_render(right, op, True)}"
    if parent_op is not None:
        pp, p = _PREC[parent_op], _PREC[op]
        if p < pp or (is_right and p == pp and parent_op == "-"):
            text = f"({text})"
    return text


def _canonical_expr(e: Expr) -> Expr:
    """Put the longer operand first in every ``int * int`` node."""
    if isinstance(e, int):
        return e
    op, left, right = e
    left, right = _canonical_expr(left), _canonical_expr(right)
    if op == "*" and isinstance(left, int) and isinstance(right, int):
        left, right = _mul_order(left, right)
    return (op, left, right)


def _solution_lines(e: Expr) -> list[str]:
    """Worked lines computing ``e`` bottom-up, left to right."""
    if isinstance(e, int):
        return []
    op, left, right = e
    lines = _solution_lines(left) + _solution_lines(right)
    lv, rv = _evaluate(left), _evaluate(right)
    if op == "+":
        lines.append(_add_line(lv, rv))
    elif op == "-":
        lines.append(_sub_line(lv, rv))
    else:
        lines.extend(_mul_lines(lv, rv))
    return lines


def _check_expr(e: Expr) -> None:
    """Raise ``ValueError`` unless all operands and intermediates are >= 0."""
    if isinstance(e, int):
        if e < 0:
            raise ValueError(f"negative operand {e}")
        return
    _, left, right = e
    _check_expr(left)
    _check_expr(right)
    if _evaluate(e) < 0:
        raise ValueError(f"negative intermediate result in {_render(e)}")


# --------------------------------------------------------------------------
# Keys and the train/test partition
# --------------------------------------------------------------------------


def canonical_key(kind: str, expression: str) -> str:
    """Canonical key ``"<kind>:<expression>"`` used for the train/test partition.

    ``expression`` is the rendered arithmetic (e.g. ``"347 * 28"`` or
    ``"23 * 14 - 95"``). Spaces are removed and, when the expression is a lone
    ``a + b`` or ``a * b``, the operands are sorted numerically, so the key
    does not depend on operand order or on the question's wording.
    """
    compact = expression.replace(" ", "")
    for op in "+*":
        parts = compact.split(op)
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            compact = op.join(str(v) for v in sorted(int(p) for p in parts))
    return f"{kind}:{compact}"


def split_of_key(key: str) -> str:
    """``"test"`` iff ``int(sha256(key)[:16 hex], 16) % TEST_MODULUS == 0``, else ``"train"``."""
    h = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:16], 16)
    return "test" if h % TEST_MODULUS == 0 else "train"


def problem_key(problem: Problem) -> str:
    """Canonical key of a generated :class:`Problem`, read from its final ``So ... = ...`` line."""
    last = problem.reasoning.rsplit("\n", 1)[-1]
    if not (last.startswith("So ") and " = " in last):
        raise ValueError(f"not a curriculum reasoning: {last!r}")
    expression = last[3:].rsplit(" = ", 1)[0]
    return canonical_key(problem.kind, expression)


# --------------------------------------------------------------------------
# Question templates
# --------------------------------------------------------------------------

QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add": (
        "What is {a} + {b}?",
        "Calculate {a} plus {b}.",
        "Compute {a} + {b}.",
        "What is the sum of {a} and {b}?",
        "Add {a} and {b}.",
        "What is {a} plus {b}?",
        "Find {a} + {b}.",
    ),
    "sub": (
        "What is {a} - {b}?",
        "Compute {a} - {b}.",
        "Calculate {a} minus {b}.",
        "Subtract {b} from {a}.",
        "What is {a} minus {b}?",
        "What is the difference between {a} and {b}?",
        "Find {a} - {b}.",
    ),
    "mul": (
        "What is {a} * {b}?",
        "Calculate {a} times {b}.",
        "Compute {a} × {b}.",
        "What is the product of {a} and {b}?",
        "Multiply {a} by {b}.",
        "What is {a} x {b}?",
        "Find {a} * {b}.",
    ),
}
"""Question phrasings of the arithmetic kinds; index 0 is ``"What is a op b?"``."""

_NAMES: tuple[str, ...] = (
    "Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro",
    "Isla", "Jamal", "Kira", "Liam", "Maya", "Noah", "Olga", "Priya",
)


@dataclass(frozen=True)
class _WordTemplate:
    """A word-problem template.

    ``text`` uses ``{0}``, ``{1}``, ... for the numbers in order of appearance,
    plus ``{noun}`` and ``{name}``; ``build`` maps those numbers to an
    expression; ``sample`` draws valid numbers.
    """

    text: str
    build: Callable[[Sequence[int]], Expr]
    sample: Callable[[random.Random], tuple[int, ...]]
    nouns: tuple[str, ...]


def _sample_shop(r: random.Random) -> tuple[int, ...]:
    a, b = r.randint(2, 40), r.randint(2, 30)
    return a, b, r.randint(1, min(a * b, 999))


def _sample_rows_plus(r: random.Random) -> tuple[int, ...]:
    return r.randint(2, 30), r.randint(2, 30), r.randint(1, 200)


def _sample_buy_give(r: random.Random) -> tuple[int, ...]:
    a, b = r.randint(5, 500), r.randint(1, 300)
    return a, b, r.randint(1, a + b)


def _sample_lose_find(r: random.Random) -> tuple[int, ...]:
    a = r.randint(5, 500)
    return a, r.randint(1, a), r.randint(1, 300)


def _sample_money(r: random.Random) -> tuple[int, ...]:
    count, price = r.randint(2, 12), r.randint(2, 40)
    cost = count * price
    return r.randint(cost, min(cost + 300, 999)), count, price


def _sample_two_trays(r: random.Random) -> tuple[int, ...]:
    return r.randint(2, 9), r.randint(2, 48), r.randint(2, 9), r.randint(2, 48)


def _sample_warehouse(r: random.Random) -> tuple[int, ...]:
    a, b, c = r.randint(2, 30), r.randint(2, 30), r.randint(1, 300)
    return a, b, c, r.randint(1, min(a * b + c, 999))


def _sample_bags(r: random.Random) -> tuple[int, ...]:
    return r.randint(2, 40), r.randint(2, 40), r.randint(2, 30)


def _sample_three_days(r: random.Random) -> tuple[int, ...]:
    return r.randint(1, 400), r.randint(1, 400), r.randint(1, 400)


_WORD_TEMPLATES: tuple[_WordTemplate, ...] = (
    _WordTemplate(
        "A shop has {0} boxes with {1} {noun} each. It sells {2} {noun}. "
        "How many {noun} are left?",
        lambda o: ("-", ("*", o[0], o[1]), o[2]),
        _sample_shop,
        ("pens", "pencils", "markers", "erasers", "candles", "soaps"),
    ),
    _WordTemplate(
        "A garden has {0} rows with {1} {noun} in each row. The gardener plants "
        "{2} more {noun}. How many {noun} are in the garden now?",
        lambda o: ("+", ("*", o[0], o[1]), o[2]),
        _sample_rows_plus,
        ("roses", "tulips", "daisies", "lilies", "sunflowers"),
    ),
    _WordTemplate(
        "{name} has {0} {noun}. {name} buys {1} more and then gives {2} away. "
        "How many {noun} does {name} have now?",
        lambda o: ("-", ("+", o[0], o[1]), o[2]),
        _sample_buy_give,
        ("stickers", "marbles", "cards", "stamps", "shells", "coins"),
    ),
    _WordTemplate(
        "{name} had {0} {noun}, lost {1} of them and then found {2} more. "
        "How many {noun} does {name} have now?",
        lambda o: ("+", ("-", o[0], o[1]), o[2]),
        _sample_lose_find,
        ("marbles", "coins", "buttons", "keys", "crayons"),
    ),
    _WordTemplate(
        "{name} has {0} dollars and buys {1} {noun} that cost {2} dollars each. "
        "How many dollars does {name} have left?",
        lambda o: ("-", o[0], ("*", o[1], o[2])),
        _sample_money,
        ("books", "tickets", "notebooks", "toys", "plants"),
    ),
    _WordTemplate(
        "A baker makes {0} trays of {1} {noun} and {2} trays of {3} {noun}. "
        "How many {noun} does the baker make in total?",
        lambda o: ("+", ("*", o[0], o[1]), ("*", o[2], o[3])),
        _sample_two_trays,
        ("cookies", "muffins", "rolls", "buns", "cupcakes"),
    ),
    _WordTemplate(
        "A warehouse has {0} crates of {1} {noun}. A truck brings {2} more {noun} "
        "and {3} {noun} are shipped out. How many {noun} are in the warehouse now?",
        lambda o: ("-", ("+", ("*", o[0], o[1]), o[2]), o[3]),
        _sample_warehouse,
        ("apples", "oranges", "bottles", "cans", "jars"),
    ),
    _WordTemplate(
        "Each bag holds {0} red {noun} and {1} blue {noun}. "
        "How many {noun} are in {2} bags?",
        lambda o: ("*", ("+", o[0], o[1]), o[2]),
        _sample_bags,
        ("marbles", "beads", "balloons", "buttons"),
    ),
    _WordTemplate(
        "{name} collects {0} {noun} on Monday, {1} on Tuesday and {2} on "
        "Wednesday. How many {noun} does {name} collect in total?",
        lambda o: ("+", ("+", o[0], o[1]), o[2]),
        _sample_three_days,
        ("shells", "leaves", "stamps", "acorns", "pebbles"),
    ),
)

WORD_TEMPLATE_COUNT: int = len(_WORD_TEMPLATES)
"""Number of word-problem templates (valid ``template`` indices for ``kind="word"``)."""


# --------------------------------------------------------------------------
# Building problems
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """Everything that determines a problem except its wording."""

    kind: str
    operands: tuple[int, ...]
    template: int
    expr: Expr  # canonical expression

    @property
    def key(self) -> str:
        return canonical_key(self.kind, _render(self.expr))


def _spec(kind: str, operands: Sequence[int], template: int) -> _Spec:
    """Validate ``operands``/``template`` for ``kind`` and build the canonical expression."""
    ops = tuple(int(v) for v in operands)
    if kind in QUESTION_TEMPLATES:
        if not 0 <= template < len(QUESTION_TEMPLATES[kind]):
            raise ValueError(f"template {template} out of range for kind {kind!r}")
        if len(ops) != 2:
            raise ValueError(f"kind {kind!r} takes 2 operands, got {ops}")
        op = {"add": "+", "sub": "-", "mul": "*"}[kind]
        expr: Expr = (op, ops[0], ops[1])
    elif kind == "word":
        if not 0 <= template < WORD_TEMPLATE_COUNT:
            raise ValueError(f"word template {template} out of range")
        n_slots = _numbered_fields(_WORD_TEMPLATES[template].text)
        if len(ops) != n_slots:
            raise ValueError(f"word template {template} takes {n_slots} operands, got {ops}")
        expr = _WORD_TEMPLATES[template].build(ops)
    else:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    _check_expr(expr)
    return _Spec(kind, ops, template, _canonical_expr(expr))


def _numbered_fields(text: str) -> int:
    """Number of distinct positional fields (``{0}``, ``{1}``, ...) in ``text``."""
    fields = {f for _, f, _, _ in string.Formatter().parse(text) if f is not None}
    return sum(1 for f in fields if f.isdigit())


def _build(spec: _Spec, noun: str, name: str) -> Problem:
    """Render question and worked solution for ``spec``."""
    if spec.kind == "word":
        question = _WORD_TEMPLATES[spec.template].text.format(*spec.operands, noun=noun, name=name)
    else:
        a, b = spec.operands
        question = QUESTION_TEMPLATES[spec.kind][spec.template].format(a=a, b=b)
    expression = _render(spec.expr)
    value = _evaluate(spec.expr)
    lines = [f"Plan: {expression}."] if spec.kind == "word" else []
    lines += _solution_lines(spec.expr)
    lines.append(f"So {expression} = {value}.")
    return Problem(question=question, reasoning="\n".join(lines), answer=str(value), kind=spec.kind)


def make_problem(
    kind: str,
    operands: Sequence[int],
    template: int = 0,
    rng: random.Random | None = None,
) -> Problem:
    """Build one problem from explicit operands.

    Args:
        kind: one of :data:`KINDS`.
        operands: ``(a, b)`` for ``add``/``sub``/``mul`` (``a >= b`` for
            ``sub``); for ``word``, the numbers in their order of appearance in
            the template text (template 0: boxes, items per box, items sold).
        template: question phrasing index (``QUESTION_TEMPLATES[kind]``) or
            word template index (``0 <= template < WORD_TEMPLATE_COUNT``).
            Template 0 of the arithmetic kinds is ``"What is a op b?"``.
        rng: picks the noun and name of word problems; the first noun and name
            of the template are used when ``None``.

    Example:
        ``make_problem("mul", (347, 28))`` asks ``"What is 347 * 28?"`` with
        answer ``"9716"``.

    Raises:
        ValueError: unknown kind, bad template index, wrong operand count or a
            negative operand / intermediate result.
    """
    spec = _spec(kind, operands, template)
    noun, name = "", ""
    if kind == "word":
        nouns = _WORD_TEMPLATES[template].nouns
        noun = rng.choice(nouns) if rng is not None else nouns[0]
        name = rng.choice(_NAMES) if rng is not None else _NAMES[0]
    return _build(spec, noun, name)


def _random_number(r: random.Random, n_digits: int) -> int:
    """Uniform positive integer with exactly ``n_digits`` digits."""
    return r.randint(10 ** (n_digits - 1), 10**n_digits - 1)


def _sample_operands(kind: str, r: random.Random) -> tuple[tuple[int, ...], int]:
    """Draw operands and, for ``word``, the template index (``0`` otherwise)."""
    if kind == "add":
        da, db = r.choices((1, 2, 3, 4), weights=(1, 2, 3, 4), k=2)
        return (_random_number(r, da), _random_number(r, db)), 0
    if kind == "sub":
        da = r.choices((1, 2, 3, 4), weights=(1, 2, 3, 4))[0]
        a = _random_number(r, da)
        db = r.randint(1, da)
        b = _random_number(r, db) if db < da else r.randint(10 ** (db - 1), a)
        return (a, b), 0
    if kind == "mul":
        da, db = r.choices(((1, 1), (2, 1), (3, 1), (2, 2), (3, 2)), weights=(1, 2, 2, 3, 6))[0]
        a, b = _random_number(r, da), _random_number(r, db)
        if r.random() < 0.2:  # sometimes ask with the shorter operand first
            a, b = b, a
        return (a, b), 0
    template = r.randrange(WORD_TEMPLATE_COUNT)
    return _WORD_TEMPLATES[template].sample(r), template


def generate_problems(
    n: int,
    seed: int,
    kinds: Sequence[str] | None = None,
    split: str = "train",
    unique: bool = True,
) -> list[Problem]:
    """Generate ``n`` worked problems deterministically.

    Problem ``i`` has kind ``kinds[i % len(kinds)]`` (repeat a kind in
    ``kinds`` to weight it). Operands are drawn from ``random.Random(seed)``
    (never the global random state) and redrawn until the problem's canonical
    key falls in ``split`` (see :func:`split_of_key`) and, when ``unique``, has
    not been produced yet in this call. The question phrasing, noun and name
    are drawn after acceptance, so they do not affect the partition.

    Args:
        n: number of problems.
        seed: random seed; equal seeds give equal lists.
        kinds: kinds to cycle through; defaults to :data:`KINDS`.
        split: ``"train"`` or ``"test"`` (~10% of the problem space, disjoint
            from train).
        unique: forbid two problems with the same canonical key in the result.
            Pass ``False`` to sample more problems of a kind than its split
            contains.

    Raises:
        ValueError: bad ``n``, ``kinds`` or ``split``, or (``unique=True``) the
            space of a kind is exhausted.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    kind_list = tuple(KINDS if kinds is None else kinds)
    if not kind_list:
        raise ValueError("kinds must not be empty")
    for kind in kind_list:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")

    r = random.Random(seed)
    seen: set[str] = set()
    problems: list[Problem] = []
    for i in range(n):
        kind = kind_list[i % len(kind_list)]
        for _ in range(_MAX_ATTEMPTS_PER_PROBLEM):
            operands, word_template = _sample_operands(kind, r)
            spec = _spec(kind, operands, word_template)
            key = spec.key
            if split_of_key(key) != split or (unique and key in seen):
                continue
            break
        else:
            raise ValueError(
                f"could not draw a new {kind!r} problem for split {split!r} after "
                f"{_MAX_ATTEMPTS_PER_PROBLEM} attempts; ask for fewer or pass unique=False"
            )
        seen.add(key)
        if kind == "word":
            template = _WORD_TEMPLATES[word_template]
            problems.append(_build(spec, r.choice(template.nouns), r.choice(_NAMES)))
        else:
            phrasing = r.randrange(len(QUESTION_TEMPLATES[kind]))
            problems.append(_build(_Spec(kind, spec.operands, phrasing, spec.expr), "", ""))
    return problems


def default_test_set() -> list[Problem]:
    """The default held-out evaluation set: ``generate_problems(500, seed=1234, split="test")``."""
    return generate_problems(500, seed=1234, split="test")


# --------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------


def write_jsonl(problems: Iterable[Problem], path: str | os.PathLike[str]) -> None:
    """Write ``{"problem": question, "answer": answer}`` per line (UTF-8).

    This is the evaluation format read by the CLI. Parent directories are
    created as needed.
    """
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps({"problem": p.question, "answer": p.answer}, ensure_ascii=False))
            f.write("\n")


def training_texts(problems: Iterable[Problem], system: str | None = None) -> list[str]:
    """Chat-formatted training strings (:meth:`Problem.chat_text`) of ``problems``."""
    return [p.chat_text(system) for p in problems]
