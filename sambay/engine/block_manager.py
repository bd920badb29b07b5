"""The pool of fixed-size K/V blocks: every paged layer uses the same block ids, so one free list
accounts for all of them. Block 0 is never handed out (padding rows of a decode step write there)."""

from __future__ import annotations

from collections import deque

from .sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is scratch), got {num_blocks}")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free = deque(range(1, num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def capacity_tokens(self) -> int:
        """Tokens one sequence can hold when it has the whole pool."""
        return (self.num_blocks - 1) * self.block_size

    def needed(self, seq: Sequence, tokens: int) -> int:
        """Blocks ``seq`` still needs to hold ``tokens`` positions."""
        return max(0, -(-tokens // self.block_size) - len(seq.blocks))

    def can_grow(self, seq: Sequence, tokens: int) -> bool:
        return self.needed(seq, tokens) <= len(self._free)

    def grow(self, seq: Sequence, tokens: int) -> None:
        """Give ``seq`` blocks for ``tokens`` positions (the caller checked :meth:`can_grow`)."""
        for _ in range(self.needed(seq, tokens)):
            seq.blocks.append(self._free.popleft())

    def free(self, seq: Sequence) -> None:
        self._free.extend(seq.blocks)
        seq.blocks = []
