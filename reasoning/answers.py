r"""Answer extraction and answer checking for math chain-of-thought generations.

This module turns a raw model generation into a final answer and decides
whether that answer is equivalent to a reference answer, in the style of the
graders used for MATH / AIME-type benchmarks.

Public API
----------
``extract_boxed(text)``
    Contents of the last top-level ``\boxed{...}`` (or ``\fbox{...}``).
``split_reasoning(text)``
    Split a generation into ``(reasoning, answer_part)``.
``normalize_answer(s)``
    Canonical string form used before any comparison.
``answers_match(prediction, reference)``
    Equivalence test (string, numeric, symbolic, structural).
``majority_vote(answers)``
    Most common answer up to ``answers_match`` equivalence.
``pass_at_1(correct)`` / ``maj_at_k(answers, reference)``
    Aggregate metrics.

Conventions used by :func:`answers_match`
-----------------------------------------
* **Percent.**  A percent sign is dropped during normalization, as MATH-style
  graders do: ``50\%`` equals ``50`` (and does *not* equal ``0.5``).
  Degree marks (``^\circ``) and dollar signs are dropped the same way.
* **Units.**  A ``\text{...}`` group of words that follows a value is a unit
  annotation and is dropped (``10\text{ cm}^2`` -> ``10``), as is a trailing
  plain unit word after a number separated by a space (``5 inches`` -> ``5``).
  ``\text{X}`` anywhere else is unwrapped to ``X``.
* **Numbers.**  Integers and fractions are compared exactly.  As soon as one
  side is written as a decimal (``0.333``) the comparison uses a relative
  tolerance of :data:`RELATIVE_TOLERANCE` (``1e-6``) with an absolute floor of
  :data:`ABSOLUTE_TOLERANCE` (``1e-12``) for values near zero.  So ``0.5``
  matches ``\frac{1}{2}`` but ``0.33`` does not match ``\frac13``, and
  ``1000000`` never matches ``1000001``.  ``1.5e3`` is read as scientific
  notation.
* **Thousands separators.**  ``1,000`` means ``1000`` only when the whole
  answer is a number whose commas form proper groups of three digits
  (``1,000,000.5``); ``1,0000`` stays a two-element list.
* **Symbolic.**  Simple LaTeX is translated to SymPy.  Exact constant
  expressions are equal when their difference evaluates or simplifies to zero;
  expressions that contain a decimal are compared numerically with the
  tolerance above.  Expressions with free variables must satisfy
  ``sympy.simplify(a - b) == 0`` (decimals are converted to exact rationals
  first); a few numeric probe points reject obvious mismatches cheaply.  The
  letters ``e`` and ``i`` stand for Euler's number and the imaginary unit.
* **Safety.**  Symbolic work is size-bounded (string length, expression-tree
  size, exponent and factorial magnitudes are checked on an unevaluated parse
  before anything is evaluated) and additionally time-bounded by
  :data:`SYMBOLIC_TIMEOUT_S`; anything rejected or too slow is simply "not
  equal".  :func:`answers_match` never raises.
* **Structures.**  ``(a, b)`` / ``[a, b)`` (tuples, points, intervals) are
  ordered and their bracket types must agree exactly, so ``[1, 3)`` does not
  match ``[1, 3]``; the entries are compared with the full equivalence rules.
  ``\{a, b\}`` sets and bare comma lists ``a, b`` are order-insensitive and
  may match each other.  ``a \pm b`` is read as the set ``\{a+b, a-b\}``;
  unions ``A \cup B`` are order-insensitive; ``pmatrix``-style matrices are
  compared cell by cell (the delimiter style is ignored).  A one-element set
  ``\{5\}`` does not match the bare value ``5``.
* **Words.**  Purely alphabetic answers of two or more letters compare
  case-insensitively (``Yes`` == ``\text{yes}``); everything else is
  case-sensitive.
* **Assignments.**  A leading single-variable assignment is stripped:
  ``x = 5`` matches ``5`` (also per element: ``x=1, y=2`` matches ``1, 2``).
  Other equations are compared side by side (either orientation).
* **Empty / None.**  ``None`` or an empty (after normalization) prediction
  never matches anything, not even an empty reference.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import TypeVar

import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication_application,
    parse_expr,
    standard_transformations,
)

__all__ = [
    "extract_boxed",
    "split_reasoning",
    "normalize_answer",
    "answers_match",
    "majority_vote",
    "pass_at_1",
    "maj_at_k",
    "RELATIVE_TOLERANCE",
    "ABSOLUTE_TOLERANCE",
    "SYMBOLIC_TIMEOUT_S",
]

#: Relative tolerance for comparisons that involve a decimal number.
RELATIVE_TOLERANCE: float = 1e-6
#: Absolute tolerance floor, so that values that should be zero still compare.
ABSOLUTE_TOLERANCE: float = 1e-12
#: Wall-clock bound (seconds) on one symbolic comparison.
SYMBOLIC_TIMEOUT_S: float = 2.0

# Size limits that keep SymPy away from pathological inputs.
_MAX_NORMALIZE_CHARS = 2_000  # longer answers only get a cheap, linear normalization
_MAX_SYMBOLIC_CHARS = 400  # longer normalized strings are never parsed by SymPy
_MAX_TREE_NODES = 400  # nodes of the unevaluated expression tree
_MAX_EXPONENT = 10_000  # |numeric exponent| when the base is a number
_MAX_SYMBOLIC_EXPONENT = 64  # |numeric exponent| when the base has variables
_MAX_RESULT_DIGITS = 100_000  # estimated decimal digits of base ** exponent
_MAX_FACTORIAL_ARG = 1_000
_MAX_BINOMIAL_ARG = 10_000
_MAX_SIMPLIFY_OPS = 80  # count_ops(a - b) above which simplify is not tried
_MAX_ELEMENTS = 32  # elements of a tuple / set compared element-wise
_MAX_DEPTH = 8  # nesting depth of structures
_EVALF_DIGITS = 30

_T = TypeVar("_T")


# ---------------------------------------------------------------------------
# Low-level LaTeX scanning helpers
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


_SCAN_TOKEN_RE = re.compile(r"\\[A-Za-z]+|\\.|.", re.DOTALL)
_OPENERS = {"(", "[", "{", "\\{"}
_CLOSERS = {")", "]", "}", "\\}"}


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    r"""Yield ``(start, token, depth)`` for each LaTeX token of ``text``.

    ``depth`` is the bracket nesting depth *outside* the token, i.e. an
    opening bracket is reported at the depth of its surroundings and so is
    its closing bracket.  Round, square and curly brackets (and ``\{``/``\}``)
    all count, without checking that their types pair up: this is what makes
    half-open intervals such as ``[1, 3)`` scan as one group.
    """
    depth = 0
    for m in _SCAN_TOKEN_RE.finditer(text):
        tok = m.group(0)
        if tok in _CLOSERS:
            depth -= 1
            yield m.start(), tok, depth
        elif tok in _OPENERS:
            yield m.start(), tok, depth
            depth += 1
        else:
            yield m.start(), tok, depth


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split ``text`` at occurrences of the token ``separator`` at depth 0."""
    parts: list[str] = []
    last = 0
    for start, tok, depth in _scan(text):
        if depth == 0 and tok == separator:
            parts.append(text[last:start])
            last = start + len(tok)
    parts.append(text[last:])
    return parts


def _encloses(text: str) -> bool:
    """True if the bracket opening ``text`` is closed by its last token."""
    tokens = list(_scan(text))
    if len(tokens) < 2 or tokens[0][1] not in _OPENERS or tokens[-1][1] not in _CLOSERS:
        return False
    # The first bracket is open at depth 0; it must not close before the end.
    for _, tok, depth in tokens[1:-1]:
        if depth == 0 and tok in _CLOSERS:
            return False
    return tokens[-1][2] == 0


# ---------------------------------------------------------------------------
# extract_boxed
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# split_reasoning
# ---------------------------------------------------------------------------

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_PARAGRAPH_BREAK_RE = re.compile(r"\n[ \t\r]*\n")


def split_reasoning(text: str) -> tuple[str, str]:
    r"""Split a generation into ``(reasoning, answer_part)``.

    The rule, applied to the generation as a whole:

    1. If the text contains ``</think>``, the reasoning is everything before
       the *last* ``</think>`` and the answer part everything after it.  A
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
    close = text.rfind(_THINK_CLOSE)
    if close != -1:
        reasoning = text[:close].strip()
        if reasoning.startswith(_THINK_OPEN):
            reasoning = reasoning[len(_THINK_OPEN) :].strip()
        return reasoning, text[close + len(_THINK_CLOSE) :].strip()

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
# normalize_answer
# ---------------------------------------------------------------------------

_UNICODE_REPLACEMENTS = {
    "\u00a0": " ",
    "\u2212": "-",  # minus sign
    "\u2013": "-",  # en dash
    "\u03c0": "\\pi ",
    "\u221e": "\\infty ",
    "\u221a": "\\sqrt",
    "\u00d7": "\\times ",
    "\u00b7": "\\cdot ",
    "\u22c5": "\\cdot ",
    "\u00f7": "\\div ",
    "\u00b0": "^\\circ",
    "\u2264": "\\le ",
    "\u2265": "\\ge ",
    "\u2260": "\\ne ",
    "\u222a": "\\cup ",
    "\u2229": "\\cap ",
    "\u2205": "\\emptyset ",
    "\u00b1": "\\pm ",
}

_SIZING_RE = re.compile(
    r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)"
    r"(?![A-Za-z])\s*\.?"
)
_STYLE_RE = re.compile(r"\\(?:displaystyle|textstyle|scriptstyle)(?![A-Za-z])")
_SPACING_RE = re.compile(r"\\\\|\\[,!:;> ]|\\q?quad(?![A-Za-z])|~")
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\degree(?![A-Za-z])")
_FRAC_VARIANT_RE = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_BINOM_VARIANT_RE = re.compile(r"\\[dt]binom(?![A-Za-z])")
_TEXT_CMD_RE = re.compile(
    r"\\(text|textrm|textnormal|textup|textit|textbf|textsf|mbox|hbox|emph|"
    r"mathrm|mathit|mathbf|mathsf|mathnormal|operatorname|boldsymbol)\s*\{"
)
_TEXT_MODE_CMDS = frozenset(
    {"text", "textrm", "textnormal", "textup", "textit", "textbf", "textsf", "mbox", "hbox", "emph"}
)
_UNIT_LIKE_RE = re.compile(r"^[A-Za-z][A-Za-z\s.\-/]*(?:\^\{?\d\}?)?$")
_UNIT_POWER_RE = re.compile(r"\s*\^\s*(?:\{\s*\d\s*\}|\d)")
_KNOWN_UNITS = frozenset(
    """
    m cm mm km in inch inches ft foot feet yd yard yards mi mile miles
    meter meters metre metres centimeter centimeters kilometer kilometers
    g kg gram grams kilogram kilograms lb lbs pound pounds oz ounce ounces
    s sec second seconds min minute minutes h hr hrs hour hours day days
    week weeks month months year years l liter liters litre litres ml
    mph kph unit units sq square cubic degree degrees radian radians
    dollar dollars cent cents percent
    """.split()
)
_NUMBER_PREFIX = r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:/\d+)?"
_TRAILING_UNIT_RE = re.compile(
    rf"^(?P<num>{_NUMBER_PREFIX})\s+"
    r"(?P<unit>[A-Za-z]{2,}\.?(?:\s+[A-Za-z]+\.?)*(?:\s*\^\s*\{?\d\}?)?)$"
)
_NON_UNIT_WORDS = frozenset({"pi", "and", "or", "sqrt", "frac", "infty", "inf"})
_PLAIN_CONJUNCTION_RE = re.compile(r"\s+(?:and|or)\s+")
_SYNONYMS = [
    (re.compile(r"\\leq(?![A-Za-z])"), r"\\le"),
    (re.compile(r"\\geq(?![A-Za-z])"), r"\\ge"),
    (re.compile(r"\\neq(?![A-Za-z])"), r"\\ne"),
    (re.compile(r"\\varnothing(?![A-Za-z])"), r"\\emptyset"),
    (re.compile(r"\\lbrace(?![A-Za-z])"), r"\\{"),
    (re.compile(r"\\rbrace(?![A-Za-z])"), r"\\}"),
    (re.compile(r"\\[lr]vert(?![A-Za-z])"), "|"),
    (re.compile(r"\\(?:cdots|dots|dotsc|dotsb)(?![A-Za-z])"), r"\\ldots"),
    (re.compile(r"\\infin(?![A-Za-z])"), r"\\infty"),
    (re.compile(r"\\bigcup(?![A-Za-z])"), r"\\cup"),
]
_GREEK_NAMES = frozenset(
    """
    alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota
    kappa lambda mu nu xi rho sigma tau upsilon phi varphi chi psi omega
    Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega
    """.split()
)
_ASSIGNMENT_LHS_RE = re.compile(
    r"^\s*(?:[A-Za-z]|\\(?:" + "|".join(sorted(_GREEK_NAMES)) + r"))"
    r"(?:_\{?[A-Za-z0-9]+\}?)?\s*$"
)
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SHORTHAND_CMD_RE = re.compile(r"\\(frac|binom|sqrt)(?![A-Za-z])")
_CONTROL_WORD_OR_SYMBOL_RE = re.compile(r"\\[A-Za-z]+|\\.")
_CHOICE_RE = re.compile(r"^\(([A-Z])\)$")


def _rewrite_text_groups(s: str) -> str:
    r"""Drop unit annotations and unwrap the remaining ``\text{...}`` groups.

    * ``\text{and}`` / ``\text{or}`` become a comma (a list separator);
    * a word-only text group right after a value is a unit and is removed,
      together with a following ``^2``-style exponent (``\text{ cm}^2``);
      math-mode commands such as ``\mathrm{...}`` count as units only for
      well-known unit names, since ``\mathrm{e}`` or ``\mathrm{i}`` are values;
    * any other group is replaced by its contents.
    """
    pos = 0
    while (m := _TEXT_CMD_RE.search(s, pos)) is not None:
        close = _matching_brace(s, m.end() - 1)
        if close is None:
            break
        content = s[m.end() : close]
        stripped = content.strip()
        end = close + 1
        before = s[: m.start()].rstrip()
        follows_value = bool(before) and (before[-1].isalnum() or before[-1] in ")]}!.|")
        is_unit = follows_value and (
            (m.group(1) in _TEXT_MODE_CMDS and bool(_UNIT_LIKE_RE.match(stripped)))
            or stripped.lower() in _KNOWN_UNITS
        )
        if stripped.lower() in {"and", "or", ","}:
            replacement = ","
        elif is_unit:
            replacement = ""
            power = _UNIT_POWER_RE.match(s, end)
            if power is not None:
                end = power.end()
        else:
            replacement = content  # rescanned, so nested groups are handled too
        s = s[: m.start()] + replacement + s[end:]
        pos = m.start() + (len(replacement) if replacement == "," else 0)
    return s


def _strip_trailing_unit_words(s: str) -> str:
    """``"5 inches"`` -> ``"5"``: drop plain words that follow a bare number."""
    m = _TRAILING_UNIT_RE.match(s)
    if m is None:
        return s
    words = {w.strip(".").lower() for w in re.findall(r"[A-Za-z.]+", m.group("unit"))}
    if words & _NON_UNIT_WORDS:
        return s
    return m.group("num")


def _strip_assignment(s: str) -> str:
    r"""``"x = 5"`` -> ``"5"``: strip a leading single-variable assignment.

    Only applies when the string has exactly one ``=`` and its left side is a
    single (optionally subscripted) letter or Greek letter.
    """
    if s.count("=") != 1:
        return s
    lhs, rhs = s.split("=")
    if rhs.strip() and _ASSIGNMENT_LHS_RE.match(lhs):
        return rhs.strip()
    return s


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and s[i].isspace():
        i += 1
    return i


def _brace_shorthand(s: str) -> str:
    r"""Add the braces that LaTeX lets one omit: ``\frac34`` -> ``\frac{3}{4}``.

    Handles ``\frac``, ``\binom`` (two arguments) and ``\sqrt`` (one argument
    plus an optional ``[n]``).  An unbraced argument is a single character or
    a single control sequence (``\frac\pi2`` -> ``\frac{\pi}{2}``).
    """
    out: list[str] = []
    pos = 0
    while True:
        m = _SHORTHAND_CMD_RE.search(s, pos)
        if m is None:
            out.append(s[pos:])
            return "".join(out)
        out.append(s[pos : m.end()])
        i = m.end()
        n_args = 2
        if m.group(1) == "sqrt":
            n_args = 1
            j = _skip_spaces(s, i)
            if j < len(s) and s[j] == "[":
                close = s.find("]", j)
                if close == -1:
                    out.append(s[i:])
                    return "".join(out)
                out.append(s[j : close + 1])
                i = close + 1
        for _ in range(n_args):
            j = _skip_spaces(s, i)
            if j >= len(s) or s[j] in "}]),":
                break
            if s[j] == "{":
                close = _matching_brace(s, j)
                if close is None:
                    break
                out.append("{" + _brace_shorthand(s[j + 1 : close]) + "}")
                i = close + 1
            elif s[j] == "\\":
                cmd = _CONTROL_WORD_OR_SYMBOL_RE.match(s, j)
                assert cmd is not None  # a backslash always starts a control sequence
                out.append("{" + cmd.group(0) + "}")
                i = cmd.end()
            else:
                out.append("{" + s[j] + "}")
                i = j + 1
        pos = i


def _drop_spaces(s: str) -> str:
    r"""Remove whitespace, keeping one space where it ends a control word.

    ``\pi r`` must not become ``\pir``, so a space between a control word and
    a following letter is kept (as a single space).
    """

    def repl(m: re.Match[str]) -> str:
        cmd = m.group(1) or ""
        nxt = m.string[m.end() : m.end() + 1]
        return cmd + " " if cmd and nxt.isalpha() else cmd

    return re.sub(r"(\\[A-Za-z]+)?\s+", repl, s)


def _unwrap_outer_braces(s: str) -> str:
    """``{{5}}`` -> ``5``; ``{1}{2}`` is left alone.  Linear time."""
    partner: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(s):
        if s[i] == "\\":
            i += 2
            continue
        if s[i] == "{":
            stack.append(i)
        elif s[i] == "}" and stack:
            partner[stack.pop()] = i
        i += 1
    lo, hi = 0, len(s) - 1
    while lo < hi and s[lo] == "{" and partner.get(lo) == hi:
        lo, hi = lo + 1, hi - 1
    return s[lo : hi + 1].strip() if lo else s


def _unwrap_whole_box(s: str) -> str:
    m = _BOX_RE.match(s)
    if m is None:
        return s
    content, end = _read_box_argument(s, m.end())
    if content is not None and end == len(s):
        return content.strip()
    return s


def _light_normalize(s: str) -> str:
    """Cheap, linear-time normalization for inputs too long or odd for the full one."""
    s = re.sub(r"\s+", "", s.replace("\\$", "").replace("$", "")).rstrip(".")
    return s.replace(",", "") if _THOUSANDS_RE.match(s) else s


@lru_cache(maxsize=8192)
def _normalize_cached(s: str) -> str:
    if len(s) > _MAX_NORMALIZE_CHARS:
        return _light_normalize(s)
    try:
        return _full_normalize(s)
    except RecursionError:  # absurdly nested input
        return _light_normalize(s)


def _full_normalize(s: str) -> str:
    for old, new in _UNICODE_REPLACEMENTS.items():
        s = s.replace(old, new)
    s = _unwrap_whole_box(s.strip())
    s = _STYLE_RE.sub("", s)
    s = _SIZING_RE.sub("", s)
    s = _FRAC_VARIANT_RE.sub(r"\\frac", s)
    s = _BINOM_VARIANT_RE.sub(r"\\binom", s)
    s = _SPACING_RE.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", s)
    s = s.replace("{,}", ",")  # 1{,}000
    s = s.replace("\\$", "").replace("$", "")
    s = _DEGREE_RE.sub("", s)
    s = s.replace("\\%", "").replace("%", "")
    s = _rewrite_text_groups(s)
    s = _PLAIN_CONJUNCTION_RE.sub(",", s)
    s = s.strip()
    s = _strip_trailing_unit_words(s)
    for pattern, replacement in _SYNONYMS:
        s = pattern.sub(replacement, s)
    s = s.strip().rstrip(".").strip()
    s = _strip_assignment(s)
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    s = _brace_shorthand(s)
    s = _drop_spaces(s)
    s = _unwrap_outer_braces(s)
    s = _CHOICE_RE.sub(r"\1", s)
    return s.rstrip(".")


def normalize_answer(s: str) -> str:
    r"""Return the canonical string form of an answer, used before comparing.

    The transformations, in order:

    * Unicode math symbols become LaTeX (``π`` -> ``\pi``, ``−`` -> ``-``);
      an answer that is one whole ``\boxed{...}`` is unwrapped.
    * Layout-only LaTeX is removed: ``\left``/``\right`` and ``\big``-style
      sizing, ``\displaystyle``, spacing commands (``\!``, ``\,``, ``\;``,
      ``\quad``, ``~``).
    * ``\dfrac``/``\tfrac``/``\cfrac`` -> ``\frac``; ``\dbinom``/``\tbinom``
      -> ``\binom``; ``\leq`` -> ``\le`` and similar synonyms.
    * Dollar signs, degree marks (``^\circ``) and percent signs are dropped.
    * Unit annotations are dropped (``10\text{ cm}^2`` -> ``10``,
      ``5 inches`` -> ``5``); ``\text{and}`` and a plain `` and `` become a
      list comma; other ``\text{X}``/``\mathrm{X}`` groups become ``X``.
    * Trailing periods are removed, then a leading single-variable assignment
      (``x = 5`` -> ``5``).
    * Thousands separators are removed when the whole answer is a number with
      proper three-digit groups (``1,000`` -> ``1000``, ``1{,}000`` too).
    * Omitted braces are restored (``\frac34`` -> ``\frac{3}{4}``,
      ``\sqrt2`` -> ``\sqrt{2}``).
    * Whitespace is removed (except a single space that terminates a control
      word before a letter, as in ``\pi r``); redundant outer braces are
      removed, and a multiple-choice ``(A)`` becomes ``A``.

    Letter case is preserved.  Non-string input gives ``""``.
    """
    if not isinstance(s, str):
        return ""
    return _normalize_cached(s)


# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------

_NUM = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN_NUMBER_RE = re.compile(rf"^{_NUM}(?:[eE][+-]?\d{{1,3}})?$")  # 1.5e3 too, bounded
_SLASH_FRACTION_RE = re.compile(rf"^({_NUM})/({_NUM})$")
_LATEX_FRACTION_RE = re.compile(rf"^([+-]?)\\frac\{{({_NUM})\}}\{{({_NUM})\}}$")


@dataclass(frozen=True)
class _Number:
    """A literal number: exact value plus whether it was written as a decimal."""

    value: Fraction
    inexact: bool


def _parse_number(s: str) -> _Number | None:
    r"""Parse ``12``, ``-0.5``, ``3/4`` or ``\frac{3}{4}`` into an exact value."""
    try:
        if _PLAIN_NUMBER_RE.match(s):
            return _Number(Fraction(s), "." in s)
        m = _SLASH_FRACTION_RE.match(s)
        if m is not None:
            return _Number(Fraction(m.group(1)) / Fraction(m.group(2)), "." in s)
        m = _LATEX_FRACTION_RE.match(s)
        if m is not None:
            value = Fraction(m.group(2)) / Fraction(m.group(3))
            return _Number(-value if m.group(1) == "-" else value, "." in s)
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _fractions_close(a: Fraction, b: Fraction) -> bool:
    diff = abs(a - b)
    scale = max(abs(a), abs(b))
    return diff <= Fraction(RELATIVE_TOLERANCE) * scale or diff <= Fraction(ABSOLUTE_TOLERANCE)


def _numbers_match(a: _Number, b: _Number) -> bool:
    if a.value == b.value:
        return True
    if a.inexact or b.inexact:
        return _fractions_close(a.value, b.value)
    return False


def _complex_close(a: complex, b: complex) -> bool:
    diff = abs(a - b)
    return diff <= max(RELATIVE_TOLERANCE * max(abs(a), abs(b)), ABSOLUTE_TOLERANCE)


# ---------------------------------------------------------------------------
# LaTeX -> SymPy translation
# ---------------------------------------------------------------------------


class _Unsupported(Exception):
    """Raised by the translator for LaTeX it does not understand."""


_LATEX_TOKEN_RE = re.compile(r"\\[A-Za-z]+|\\.|\d+(?:\.\d*)?|\.\d+|\s+|.", re.DOTALL)

_FUNCTIONS: dict[str, str] = {
    "sin": "sin", "cos": "cos", "tan": "tan", "cot": "cot", "sec": "sec", "csc": "csc",
    "arcsin": "asin", "arccos": "acos", "arctan": "atan",
    "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
    "exp": "exp", "ln": "log", "log": "log",
}  # fmt: skip
_CONSTANTS: dict[str, str] = {"pi": "pi", "infty": "oo"}
_INVERSE_TRIG: dict[str, str] = {"sin": "asin", "cos": "acos", "tan": "atan"}
_GREEK_SYMBOLS: dict[str, str] = {
    name: {"varepsilon": "epsilon", "vartheta": "theta", "varphi": "phi", "lambda": "lamda",
           "Lambda": "Lamda"}.get(name, name)
    for name in _GREEK_NAMES
    if name != "Pi"
}  # fmt: skip
_GREEK_SYMBOLS["Pi"] = "Pi"
_MULTIPLY = {"\\cdot", "\\times", "\\ast"}
_OPERATORS = {"+", "-", "*", "/"}

_SYMPY_FUNCTIONS: dict[str, Callable[..., sympy.Basic]] = {
    "sqrt": sympy.sqrt,
    "root": sympy.root,
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan,
    "cot": sympy.cot, "sec": sympy.sec, "csc": sympy.csc,
    "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
    "exp": sympy.exp, "log": sympy.log, "Abs": sympy.Abs,
    "floor": sympy.floor, "ceiling": sympy.ceiling,
    "factorial": sympy.factorial, "binomial": sympy.binomial,
}  # fmt: skip
_SYMPY_CONSTANTS: dict[str, sympy.Basic] = {
    "pi": sympy.pi,
    "oo": sympy.oo,
    "e": sympy.E,
    "i": sympy.I,
}
# Names the parser's transformations themselves emit; nothing else (in
# particular no builtins) is reachable from the evaluated code.
_PARSER_GLOBALS: dict[str, object] = {
    "__builtins__": {},
    "Integer": sympy.Integer,
    "Float": sympy.Float,
    "Rational": sympy.Rational,
    "Symbol": sympy.Symbol,
    "Function": sympy.Function,
    "Add": sympy.Add,
    "Mul": sympy.Mul,
    "Pow": sympy.Pow,
    "factorial": sympy.factorial,
}
_TRANSFORMATIONS = standard_transformations + (implicit_multiplication_application, convert_xor)


def _lazy(func: Callable[..., sympy.Basic]) -> Callable[..., sympy.Basic]:
    """Wrap a SymPy function so that it builds an unevaluated node."""

    def build(*args: sympy.Basic, **_ignored: object) -> sympy.Basic:
        if func is sympy.log and len(args) == 2:
            return sympy.Mul(
                sympy.log(args[0], evaluate=False),
                sympy.Pow(sympy.log(args[1], evaluate=False), -1, evaluate=False),
                evaluate=False,
            )
        if func is sympy.sqrt:
            return sympy.Pow(args[0], sympy.Rational(1, 2), evaluate=False)
        if func is sympy.root:
            return sympy.Pow(args[0], sympy.Pow(args[1], -1, evaluate=False), evaluate=False)
        return func(*args, evaluate=False)

    return build


_LAZY_FUNCTIONS: dict[str, Callable[..., sympy.Basic]] = {
    name: _lazy(func) for name, func in _SYMPY_FUNCTIONS.items()
}


class _LatexTranslator:
    r"""Translate a small, common subset of LaTeX math into SymPy source code.

    Supported: numbers, single-letter variables (with subscripts), Greek
    letters, ``+ - * /``, ``\cdot``, ``\times``, ``\div``, ``^``, grouping with
    ``() [] {}``, ``\frac``, ``\sqrt`` (also ``\sqrt[n]``), ``\binom``,
    ``\pi``, ``\infty``, ``|x|``, ``\lfloor``/``\lceil``, postfix ``!``,
    ``\sin``-style functions (``\sin x``, ``\sin^2(x)``, ``\log_2 8``) and
    implicit multiplication (``2\sqrt{3}``, ``2x``).

    Every emitted name comes from a fixed table or is a sanitized variable
    name, so the generated code contains nothing but arithmetic, known SymPy
    functions and symbols.  Decimal literals are emitted as exact fractions
    (``0.25`` -> ``(25/100)``) and recorded in :attr:`inexact`.
    """

    def __init__(self, latex: str) -> None:
        self.tokens = [t for t in _LATEX_TOKEN_RE.findall(latex) if not t.isspace()]
        self.pos = 0
        self.symbols: dict[str, sympy.Basic] = {}
        self.inexact = False

    # -- token access -------------------------------------------------------
    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        tok = self._peek()
        if tok is None:
            raise _Unsupported("unexpected end of input")
        self.pos += 1
        return tok

    # -- entry point --------------------------------------------------------
    def translate(self) -> str:
        code = self._sequence(stop=None)
        if self.pos != len(self.tokens) or not code:
            raise _Unsupported("trailing input")
        return code

    # -- grammar ------------------------------------------------------------
    def _sequence(self, stop: str | None) -> str:
        """Translate tokens up to (and consuming) ``stop``, or to the end."""
        parts: list[str] = []
        operand_start: int | None = None  # index in parts of the last operand

        def add_operand(code: str) -> None:
            nonlocal operand_start
            if operand_start is not None:
                parts.append("*")
            operand_start = len(parts)
            parts.append(code)

        while True:
            tok = self._peek()
            if tok is None:
                if stop is not None:
                    raise _Unsupported(f"missing {stop!r}")
                break
            if tok == stop:
                self.pos += 1
                break
            if tok in {")", "]", "}", "\\rfloor", "\\rceil"}:
                raise _Unsupported("unbalanced bracket")
            if tok in _OPERATORS or tok in _MULTIPLY or tok == "\\div":
                self.pos += 1
                parts.append("/" if tok == "\\div" else "*" if tok in _MULTIPLY else tok)
                operand_start = None
            elif tok == "^":
                self.pos += 1
                if operand_start is None:
                    raise _Unsupported("exponent without base")
                parts.append(f"**({self._argument()})")
            elif tok == "!":
                self.pos += 1
                if operand_start is None:
                    raise _Unsupported("factorial without operand")
                inner = "".join(parts[operand_start:])
                del parts[operand_start:]
                parts.append(f"factorial({inner})")
            else:
                add_operand(self._atom())
        return "".join(parts)

    def _argument(self) -> str:
        r"""A macro argument: a braced group, or a single token (``x^23`` is x^2*3)."""
        tok = self._peek()
        if tok is None:
            raise _Unsupported("missing argument")
        if tok == "{":
            self.pos += 1
            return self._nonempty(self._sequence(stop="}"))
        if tok[0].isdigit() and len(tok) > 1:
            self.tokens[self.pos] = tok[1:]
            return tok[0]
        if tok in {"-", "+"}:  # x^-1
            self.pos += 1
            return tok + self._argument()
        return self._atom()

    @staticmethod
    def _nonempty(code: str) -> str:
        if not code:
            raise _Unsupported("empty group")
        return code

    def _number(self, tok: str) -> str:
        whole, _, frac = tok.partition(".")
        frac = frac.rstrip("0") if frac else ""
        if "." in tok:
            self.inexact = True
        if not frac:
            return str(int(whole or "0"))
        return f"({int((whole or '0') + frac)}/{10 ** len(frac)})"

    def _symbol(self, name: str) -> str:
        """Register a variable and return its (safe) code name."""
        if self._peek() == "_":
            self.pos += 1
            sub = self._subscript()
            name = f"{name}_{sub}"
        code = name
        self.symbols[code] = _SYMPY_CONSTANTS[code] if code in ("e", "i") else sympy.Symbol(code)
        return code

    def _subscript(self) -> str:
        tok = self._take()
        if tok == "{":
            pieces: list[str] = []
            while (t := self._take()) != "}":
                pieces.append(t)
            text = "".join(pieces)
        else:
            text = tok
        if not re.fullmatch(r"[A-Za-z0-9]+", text):
            raise _Unsupported("complex subscript")
        return text

    def _atom(self) -> str:
        tok = self._take()
        if tok[0].isdigit() or tok[0] == ".":
            return self._number(tok)
        if len(tok) == 1 and tok.isascii() and tok.isalpha():
            return self._symbol(tok)
        if tok == "(":
            return f"({self._nonempty(self._sequence(stop=')'))})"
        if tok == "[":
            return f"({self._nonempty(self._sequence(stop=']'))})"
        if tok == "{":
            return f"({self._nonempty(self._sequence(stop='}'))})"
        if tok == "|":
            return f"Abs({self._nonempty(self._sequence(stop='|'))})"
        if not tok.startswith("\\"):
            raise _Unsupported(f"unsupported character {tok!r}")
        name = tok[1:]
        if name == "frac":
            num = self._argument()
            den = self._argument()
            return f"(({num})/({den}))"
        if name == "sqrt":
            if self._peek() == "[":
                self.pos += 1
                index = self._nonempty(self._sequence(stop="]"))
                return f"root({self._argument()},{index})"
            return f"sqrt({self._argument()})"
        if name == "binom":
            n = self._argument()
            k = self._argument()
            return f"binomial({n},{k})"
        if name == "lfloor":
            return f"floor({self._nonempty(self._sequence(stop=chr(92) + 'rfloor'))})"
        if name == "lceil":
            return f"ceiling({self._nonempty(self._sequence(stop=chr(92) + 'rceil'))})"
        if name in _CONSTANTS:
            return _CONSTANTS[name]
        if name in _GREEK_SYMBOLS:
            return self._symbol(_GREEK_SYMBOLS[name])
        if name in _FUNCTIONS:
            return self._function(_FUNCTIONS[name])
        raise _Unsupported(f"unsupported command {tok!r}")

    def _function(self, func: str) -> str:
        r"""``\sin x``, ``\sin^2(x)``, ``\log_2 8``, ``\ln(x+1)``."""
        base: str | None = None
        if func == "log" and self._peek() == "_":
            self.pos += 1
            base = self._argument()
        power: str | None = None
        if self._peek() == "^":
            self.pos += 1
            power = self._argument()
        if power in {"-1", "(-1)"} and func in _INVERSE_TRIG:  # \tan^{-1} x = arctan x
            func, power = _INVERSE_TRIG[func], None
        argument = self._function_argument()
        call = f"log({argument},{base})" if base is not None else f"{func}({argument})"
        return f"({call})**({power})" if power is not None else call

    def _function_argument(self) -> str:
        """Parenthesized argument, or a juxtaposed product such as ``2x``."""
        tok = self._peek()
        if tok in {"(", "{", "["}:
            return self._atom()
        factors: list[str] = []
        while (tok := self._peek()) is not None and (
            tok[0].isdigit()
            or (len(tok) == 1 and tok.isascii() and tok.isalpha())
            or tok in {"\\pi", "\\frac", "\\sqrt"}
            or tok[1:] in _GREEK_SYMBOLS
        ):
            factor = self._atom()
            if self._peek() == "^":
                self.pos += 1
                factor = f"{factor}**({self._argument()})"
            factors.append(factor)
        if not factors:
            raise _Unsupported("function without argument")
        return "*".join(factors)


def _exponent_is_safe(base: sympy.Basic, exponent: sympy.Basic) -> bool:
    """Decide whether ``base ** exponent`` can be evaluated cheaply."""
    if exponent.free_symbols:
        return True
    try:
        e = abs(complex(exponent.evalf(15)))
    except (TypeError, ValueError, OverflowError):
        return False
    if base.free_symbols:
        return e <= _MAX_SYMBOLIC_EXPONENT
    if e > _MAX_EXPONENT:
        return False
    try:
        b = abs(complex(base.evalf(15)))
    except (TypeError, ValueError, OverflowError):
        return False
    if b <= 10:
        return True
    digits = float(sympy.log(sympy.Float(b), 10)) * e
    return digits <= _MAX_RESULT_DIGITS


def _integer_argument_is_small(arg: sympy.Basic, limit: int) -> bool:
    if arg.free_symbols:
        return True
    try:
        return abs(complex(arg.evalf(15))) <= limit
    except (TypeError, ValueError, OverflowError):
        return False


def _tree_is_safe(expr: sympy.Basic) -> bool:
    """Check an *unevaluated* parse for constructs that would be expensive.

    The traversal is post-order, so a node is only evaluated numerically
    after all of its sub-nodes have been accepted.
    """
    for count, node in enumerate(sympy.postorder_traversal(expr), start=1):
        if count > _MAX_TREE_NODES:
            return False
        if isinstance(node, sympy.Pow):
            if not _exponent_is_safe(node.base, node.exp):
                return False
        elif isinstance(node, sympy.factorial):
            if not _integer_argument_is_small(node.args[0], _MAX_FACTORIAL_ARG):
                return False
        elif isinstance(node, sympy.binomial):
            if not _integer_argument_is_small(node.args[0], _MAX_BINOMIAL_ARG):
                return False
    return True


@dataclass(frozen=True)
class _Parsed:
    expr: sympy.Expr
    inexact: bool


@lru_cache(maxsize=4096)
def _latex_to_sympy(latex: str) -> _Parsed | None:
    """Parse normalized LaTeX into a SymPy expression, or ``None``."""
    if len(latex) > _MAX_SYMBOLIC_CHARS:
        return None
    translator = _LatexTranslator(latex)
    try:
        code = translator.translate()
    except (_Unsupported, IndexError):
        return None
    names = {**_SYMPY_CONSTANTS, **translator.symbols}
    try:
        lazy = parse_expr(
            code,
            local_dict={**_LAZY_FUNCTIONS, **names},
            global_dict=dict(_PARSER_GLOBALS),
            transformations=_TRANSFORMATIONS,
            evaluate=False,
        )
        if not isinstance(lazy, sympy.Basic) or not _tree_is_safe(lazy):
            return None
        expr = parse_expr(
            code,
            local_dict={**_SYMPY_FUNCTIONS, **names},
            global_dict=dict(_PARSER_GLOBALS),
            transformations=_TRANSFORMATIONS,
        )
    except Exception:  # SyntaxError, TypeError, SympifyError, ... from odd input
        return None
    if not isinstance(expr, sympy.Expr):
        return None
    return _Parsed(expr, translator.inexact)


# ---------------------------------------------------------------------------
# Symbolic comparison
# ---------------------------------------------------------------------------

_PROBE_VALUES = (0.6180339887, -1.3247179572, 2.2360679775, -0.4142135624, 1.7320508076)


def _numeric_value(
    expr: sympy.Expr, subs: dict[sympy.Symbol, float] | None = None
) -> complex | None:
    """Evaluate ``expr`` (at the point ``subs``) to a finite complex, or ``None``."""
    try:
        value = complex(expr.evalf(_EVALF_DIGITS, subs=subs))
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return None
    if value != value or abs(value) == float("inf"):  # NaN or infinite
        return None
    return value


def _simplifies_to_zero(diff: sympy.Expr) -> bool:
    if diff == 0:
        return True
    if sympy.count_ops(diff) > _MAX_SIMPLIFY_OPS:
        return False
    return bool(sympy.simplify(diff) == 0)


def _exprs_equal(a: sympy.Expr, b: sympy.Expr, inexact: bool) -> bool:
    """Compare two parsed expressions (see the module docstring for the rules)."""
    if any(e.has(sympy.zoo, sympy.nan) for e in (a, b)):
        return False  # undefined values (1/0, 0/0) are never equal
    if a == b:
        return True
    if any(e.has(sympy.oo, -sympy.oo) for e in (a, b)):
        return False
    symbols = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    if not symbols:
        va, vb = _numeric_value(a), _numeric_value(b)
        if va is not None and vb is not None:
            if not _complex_close(va, vb):
                return False
            if inexact:
                return True
        diff = a - b
        if diff.is_Rational:
            return bool(diff == 0)
        return _simplifies_to_zero(diff)

    # Variables: reject cheaply at a few probe points, then prove with simplify.
    valid_probes = 0
    for k in range(3):
        subs = {
            sym: _PROBE_VALUES[(k + j) % len(_PROBE_VALUES)] + 0.1 * j
            for j, sym in enumerate(symbols)
        }
        va, vb = _numeric_value(a, subs), _numeric_value(b, subs)
        if va is None or vb is None:
            continue
        valid_probes += 1
        if not _complex_close(va, vb):
            return False
    if inexact:
        return valid_probes > 0
    return _simplifies_to_zero(a - b)


def _call_with_timeout(func: Callable[[], _T], timeout: float) -> _T | None:
    """Run ``func`` in a daemon thread; ``None`` if it fails or takes too long.

    The thread cannot be killed, so an overrunning computation keeps running in
    the background; the size guards are what keep that from happening in
    practice, this is the last line of defence against a hang.
    """
    result: list[_T] = []

    def target() -> None:
        try:
            result.append(func())
        except Exception:
            pass

    thread = threading.Thread(target=target, name="answers-symbolic", daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else None


@lru_cache(maxsize=8192)
def _symbolic_match(a: str, b: str) -> bool:
    """Symbolic equality of two normalized scalar answers, time-bounded."""

    def compare() -> bool:
        pa, pb = _latex_to_sympy(a), _latex_to_sympy(b)
        if pa is None or pb is None:
            return False
        return _exprs_equal(pa.expr, pb.expr, pa.inexact or pb.inexact)

    return bool(_call_with_timeout(compare, SYMBOLIC_TIMEOUT_S))


# ---------------------------------------------------------------------------
# Structured answers
# ---------------------------------------------------------------------------

_MATRIX_RE = re.compile(
    r"^\\begin\{([pbBvV]?matrix|array)\}(?:\{[^{}]*\})?(.*)\\end\{\1\}$", re.DOTALL
)


@dataclass(frozen=True)
class _Structure:
    """A parsed answer shape.

    ``kind`` is one of ``scalar``, ``tuple`` (ordered, with brackets), ``set``
    and ``list`` (unordered), ``union`` (unordered) or ``matrix`` (rows of
    cells, stored row-major with ``shape``).
    """

    kind: str
    elements: tuple[str, ...] = ()
    opener: str = ""
    closer: str = ""
    shape: tuple[int, int] = (0, 0)


def _structure(s: str) -> _Structure:
    m = _MATRIX_RE.match(s)
    if m is not None:
        rows = [r for r in _split_top_level(m.group(2), "\\\\")]
        if rows and not rows[-1].strip():
            rows.pop()
        cells = [_split_top_level(r, "&") for r in rows]
        width = len(cells[0]) if cells else 0
        if cells and all(len(r) == width for r in cells):
            flat = tuple(c for r in cells for c in r)
            return _Structure("matrix", flat, shape=(len(cells), width))
        return _Structure("scalar")
    if s.startswith("\\{") and s.endswith("\\}") and _encloses(s):
        inner = s[2:-2]
        elements = tuple(_split_top_level(inner, ",")) if inner.strip() else ()
        return _Structure("set", elements)
    if s[:1] in {"(", "["} and s[-1:] in {")", "]"} and _encloses(s):
        parts = _split_top_level(s[1:-1], ",")
        if len(parts) >= 2:
            return _Structure("tuple", tuple(parts), s[0], s[-1])
    parts = _split_top_level(s, "\\cup")
    if len(parts) >= 2:
        return _Structure("union", tuple(parts))
    parts = _split_top_level(s, ",")
    if len(parts) >= 2:
        return _Structure("list", tuple(parts))
    for sign in ("\\pm", "\\mp"):
        parts = _split_top_level(s, sign)
        if len(parts) == 2:
            first, second = ("+", "-") if sign == "\\pm" else ("-", "+")
            return _Structure("set", (parts[0] + first + parts[1], parts[0] + second + parts[1]))
    return _Structure("scalar")


def _elements_equivalent(x: str, y: str, depth: int) -> bool:
    x, y = _strip_assignment(x.strip()), _strip_assignment(y.strip())
    if not x or not y:
        return False
    return _equivalent(x, y, depth)


def _unordered_match(xs: tuple[str, ...], ys: tuple[str, ...], depth: int) -> bool:
    """Set equality: every element of each side matches one of the other."""
    if not xs or not ys:
        return not xs and not ys
    xset, yset = {x.strip() for x in xs}, {y.strip() for y in ys}
    if xset == yset:
        return True
    forward = all(
        x in yset or any(_elements_equivalent(x, y, depth) for y in yset) for x in xset
    )
    return forward and all(
        y in xset or any(_elements_equivalent(x, y, depth) for x in xset) for y in yset
    )


def _structures_match(sa: _Structure, sb: _Structure, depth: int) -> bool:
    if max(len(sa.elements), len(sb.elements)) > _MAX_ELEMENTS:
        return False
    unordered = {"set", "list"}
    if sa.kind in unordered and sb.kind in unordered:
        return _unordered_match(sa.elements, sb.elements, depth)
    if sa.kind != sb.kind:
        return False
    if sa.kind == "union":
        return _unordered_match(sa.elements, sb.elements, depth)
    if sa.kind == "tuple" and (sa.opener, sa.closer) != (sb.opener, sb.closer):
        return False
    if sa.kind == "matrix" and sa.shape != sb.shape:
        return False
    return len(sa.elements) == len(sb.elements) and all(
        _elements_equivalent(x, y, depth) for x, y in zip(sa.elements, sb.elements)
    )


def _equations_match(a: str, b: str, depth: int) -> bool:
    sides_a, sides_b = _split_top_level(a, "="), _split_top_level(b, "=")
    if len(sides_a) != 2 or len(sides_b) != 2:
        return False
    (la, ra), (lb, rb) = sides_a, sides_b
    if not all(x.strip() for x in (la, ra, lb, rb)):
        return False
    return (_equivalent(la, lb, depth) and _equivalent(ra, rb, depth)) or (
        _equivalent(la, rb, depth) and _equivalent(ra, lb, depth)
    )


def _is_word(s: str) -> bool:
    return len(s) > 1 and s.isascii() and s.isalpha()


def _equivalent(a: str, b: str, depth: int) -> bool:
    """Equivalence of two *normalized*, non-empty answers."""
    if a == b:
        return True
    if depth > _MAX_DEPTH:
        return False
    if _is_word(a) and _is_word(b):
        return a.lower() == b.lower()
    sa, sb = _structure(a), _structure(b)
    if sa.kind != "scalar" or sb.kind != "scalar":
        return _structures_match(sa, sb, depth + 1)
    if "=" in a or "=" in b:
        return _equations_match(a, b, depth + 1)
    na, nb = _parse_number(a), _parse_number(b)
    if na is not None and nb is not None:
        return _numbers_match(na, nb)
    return _symbolic_match(a, b)


def _coerce(answer: object) -> str | None:
    """Accept strings, and numbers (e.g. dataset references stored as ints)."""
    if isinstance(answer, str):
        return answer
    if isinstance(answer, (int, float, Fraction)) and not isinstance(answer, bool):
        return str(answer)
    return None


# ---------------------------------------------------------------------------
# Public comparison and metrics
# ---------------------------------------------------------------------------


def answers_match(prediction: str | None, reference: str) -> bool:
    r"""Return True if ``prediction`` is an equivalent answer to ``reference``.

    Both sides are normalized with :func:`normalize_answer`, then compared in
    this order: exact string equality; case-insensitive equality of plain
    words; structure (tuples/intervals ordered with identical brackets, sets
    and bare lists order-insensitive, element-wise with these same rules);
    equations side by side; exact/decimal numeric equality; and finally
    symbolic equality through SymPy.  See the module docstring for the
    conventions (percent, tolerance, units, structures).

    ``None`` or an empty prediction never matches.  Never raises: malformed
    input of any kind gives ``False``.
    """
    try:
        pred, ref = _coerce(prediction), _coerce(reference)
        if pred is None or ref is None:
            return False
        a, b = normalize_answer(pred), normalize_answer(ref)
        if not a or not b:
            return False
        return _equivalent(a, b, depth=0)
    except Exception:
        return False


@dataclass
class _Cluster:
    """Answers grouped by equivalence, represented by their first member."""

    representative: str
    count: int = 1


def majority_vote(answers: Sequence[str | None]) -> str | None:
    r"""Return the most common answer, counting equivalent answers together.

    Answers are clustered greedily in order: each answer joins the first
    existing cluster whose representative (its first member) it matches under
    :func:`answers_match`, or starts a new cluster.  The representative of the
    largest cluster is returned, exactly as it was given; ties go to the
    cluster that appeared first.  ``None`` and blank answers are ignored;
    ``None`` is returned when nothing is left.

    Example: ``["1/2", "0.5", "3", "\\frac{1}{2}"]`` -> ``"1/2"``.
    """
    clusters: list[_Cluster] = []
    for raw in answers:
        answer = _coerce(raw)
        if answer is None or not answer.strip():
            continue
        for cluster in clusters:
            if answer == cluster.representative or answers_match(answer, cluster.representative):
                cluster.count += 1
                break
        else:
            clusters.append(_Cluster(answer))
    if not clusters:
        return None
    best = clusters[0]
    for cluster in clusters[1:]:
        if cluster.count > best.count:
            best = cluster
    return best.representative


def pass_at_1(correct: Sequence[bool]) -> float:
    """Mean of per-sample correctness flags (pass@1 estimated from n samples).

    Returns ``0.0`` for an empty sequence.
    """
    if len(correct) == 0:
        return 0.0
    return sum(1 for c in correct if c) / len(correct)


def maj_at_k(answers: Sequence[str | None], reference: str) -> bool:
    """True if the majority vote over all of ``answers`` matches ``reference``.

    ``k`` is ``len(answers)``; pass the first ``k`` samples to evaluate a
    smaller ``k``.
    """
    return answers_match(majority_vote(answers), reference)
