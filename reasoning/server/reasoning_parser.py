"""Separating the chain of thought from the answer, as vLLM's ``deepseek_r1`` reasoning parser does.

The text before the first ``</think>`` is the reasoning (``reasoning_content``), a leading
``<think>`` dropped; the text after it is the answer (``content``). A generation without
``</think>`` is all reasoning (the model was cut off while thinking, or its prompt opened the
``<think>`` block). The tags belong to neither part.

:class:`ReasoningParser` works on a stream of text deltas: it holds back a suffix that may be
the start of a tag split across deltas (``"</thi"`` + ``"nk>"``) until it is decided, so the
deltas it hands out concatenate to exactly what :func:`parse_reasoning` gives for the whole text.
"""

from __future__ import annotations

from ..answers import THINK_CLOSE, THINK_OPEN

__all__ = ["ReasoningParser", "parse_reasoning"]


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``: such a suffix
    starts with the tag's first character, so only those positions are tried (most deltas have none)."""
    start = max(0, len(text) - len(tag) + 1)
    i = text.find(tag[0], start)
    while i != -1:
        if tag.startswith(text[i:]):
            return len(text) - i
        i = text.find(tag[0], i + 1)
    return 0


class ReasoningParser:
    """Splits streamed text into (reasoning, content) deltas.

    ``enabled=False`` passes everything through as content. ``feed(delta)`` and ``finish()``
    return ``(reasoning_delta, content_delta)``, either possibly empty.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._state = "start" if enabled else "content"  # start -> reasoning -> content
        self._held = ""  # undecided text: a possible <think> at the start, or a partial </think>

    def feed(self, delta: str) -> tuple[str, str]:
        if self._state == "content":
            return "", delta
        text = self._held + delta
        self._held = ""
        if self._state == "start":
            if len(text) < len(THINK_OPEN) and THINK_OPEN.startswith(text):  # could still be a leading <think>
                self._held = text
                return "", ""
            if text.startswith(THINK_OPEN):
                text = text[len(THINK_OPEN):]
            self._state = "reasoning"
        end = text.find(THINK_CLOSE)
        if end != -1:
            self._state = "content"
            return text[:end], text[end + len(THINK_CLOSE):]
        keep = _partial_suffix(text, THINK_CLOSE)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], ""

    def finish(self) -> tuple[str, str]:
        """The text is over: what was held back is reasoning (no ``</think>`` came)."""
        held, self._held = self._held, ""
        if self._state == "content":
            return "", held
        self._state = "content"
        return held, ""


def parse_reasoning(text: str, enabled: bool = True) -> tuple[str | None, str | None]:
    """``(reasoning_content, content)`` of a whole generation; an empty part is None."""
    parser = ReasoningParser(enabled)
    r1, c1 = parser.feed(text)
    r2, c2 = parser.finish()
    reasoning, content = r1 + r2, c1 + c2
    return (reasoning or None) if enabled else None, content or None
