"""Waiting and running queues: admission while blocks last, preemption of the newest when they run
out, and slot packing. Plain Python, no tensors.

Slots: running sequences occupy per-slot state 0..n-1 in their decode-batch order, so a decode
step of n rows reads the slots' state as one slice (no gather). A sequence that leaves at slot i is
replaced by the last one (its state moved into slot i); a prefill runs in one of ``max_prefills``
prefill slots after ``max_batch_size`` and moves into slot n when it joins. Moves are recorded here
and carried out by the runner at the start of the next step, in order.

Prefill budget: a step computes at most ``prefill_chunk`` prompt tokens, given to the requests
being prefilled in admission order (a long prompt takes several steps, many short ones go in
together), beside the decode of every running request. Prefill slots are handed out lowest
first, so requests admitted together sit in consecutive slots.

Policies: ``continuous`` admits whenever a slot and the blocks for the prompt are free;
``static`` (the comparison baseline) admits only into an empty batch: it fills the batch, then
decodes it until the last request ends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .sequence import Sequence, Status

POLICIES = ("continuous", "static")


@dataclass
class Plan:
    """What one step computes."""

    moves: list[tuple[int, int]] = field(default_factory=list)  # (src slot, dst slot), in order
    decode: list[Sequence] = field(default_factory=list)  # row i is slot i
    prefills: list[tuple[Sequence, int]] = field(default_factory=list)  # compute tokens num_cached..end
    preempted: list[Sequence] = field(default_factory=list)

    @staticmethod
    def samples(seq: Sequence, end: int) -> bool:
        """A prefill chunk that is the sequence's last: its logits give the next token."""
        return end == seq.num_tokens


class Scheduler:
    def __init__(self, blocks: BlockManager, max_batch_size: int, prefill_chunk: int, policy: str = "continuous",
                 max_prefills: int = 1) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose from {POLICIES}")
        self.blocks, self.max_batch_size, self.prefill_chunk, self.policy = blocks, max_batch_size, prefill_chunk, policy
        self._free_prefill_slots = list(range(max_batch_size + max_prefills - 1, max_batch_size - 1, -1))
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # index = slot
        self.prefilling: list[Sequence] = []  # in admission order, each in its prefill slot
        self.preemptions = 0
        self._admissions = 0
        self._moves: list[tuple[int, int]] = []
        self._filling = False  # static policy: the batch is being formed

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.prefilling)

    # ----- leaving
    def _leave_slot(self, seq: Sequence) -> None:
        i = seq.slot
        last = self.running.pop()
        if last is not seq:
            self.running[i] = last
            self._moves.append((last.slot, i))
            last.slot = i
        seq.slot = None

    def remove(self, seq: Sequence) -> None:
        """Take ``seq`` out (finished or aborted) and free its memory."""
        if seq.status is Status.RUNNING:
            self._leave_slot(seq)
        elif seq.status is Status.PREFILLING:
            self._end_prefill(seq)
        elif seq.status is Status.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free(seq)
        seq.status = Status.FINISHED

    def _preempt(self, seq: Sequence, plan: Plan) -> None:
        """Free ``seq``'s memory and requeue it first; readmission recomputes prompt + tokens."""
        if seq.status is Status.RUNNING:
            self._leave_slot(seq)
        else:
            self._end_prefill(seq)
        self.blocks.free(seq)
        seq.num_cached, seq.status = 0, Status.WAITING
        self.waiting.appendleft(seq)
        self.preemptions += 1
        plan.preempted.append(seq)

    def _end_prefill(self, seq: Sequence) -> None:
        self.prefilling.remove(seq)
        self._free_prefill_slots.append(seq.slot)
        self._free_prefill_slots.sort(reverse=True)  # the lowest is handed out first: see _admit
        seq.slot = None

    # ----- one step
    def schedule(self) -> Plan:
        plan = Plan()
        # Room for every running sequence's next token, preempting the newest when the pool is dry;
        # oldest first, and only those whose next token opens a block (one step in block_size).
        # (A sequence whose last token is still on the device has no next token: it is out of budget.)
        size = self.blocks.block_size
        growing = [s for s in self.running if s.num_tokens > len(s.blocks) * size and not s.out_of_budget]
        for seq in sorted(growing, key=lambda s: s.admitted):
            if seq.status is not Status.RUNNING:
                continue  # preempted in this loop
            while not self.blocks.can_grow(seq, seq.num_tokens):
                victims = self.running + self.prefilling
                victim = max(victims, key=lambda s: s.admitted)
                self._preempt(victim, plan)
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                self.blocks.grow(seq, seq.num_tokens)
        if self.policy == "static" and not self.running and not self.prefilling:
            self._filling = bool(self.waiting)
        budget = self.prefill_chunk
        for seq in self.prefilling:  # chunks of the prompts already going in, oldest first
            if budget == 0:
                break
            if seq.pending:  # its prompt is in; it joins once its first token is back
                continue
            end = min(seq.num_tokens, seq.num_cached + budget)
            plan.prefills.append((seq, end))
            budget -= end - seq.num_cached
        while budget > 0 and self._may_admit():  # then new admissions, while the budget lasts
            seq = self.waiting.popleft()
            self._admit(seq)
            end = min(seq.num_tokens, seq.num_cached + budget)
            plan.prefills.append((seq, end))
            budget -= end - seq.num_cached
        if self.policy == "continuous" or not self._filling:
            plan.decode = list(self.running)
        plan.moves, self._moves = self._moves, []
        return plan

    def _may_admit(self) -> bool:
        if not self._free_prefill_slots:
            return False
        if not self.waiting or len(self.running) + len(self.prefilling) >= self.max_batch_size:
            if self.policy == "static":
                self._filling = False
            return False
        if self.policy == "static" and not self._filling:
            return False
        head = self.waiting[0]
        if head.pending:  # preempted while its last token was on the device: recomputed once that is back
            return False
        if not self.blocks.can_grow(head, head.num_tokens):
            self._filling = False
            return False
        return True

    def _admit(self, seq: Sequence) -> None:
        # The lowest free prefill slot: requests admitted together get consecutive slots, so their
        # prefills can run as one forward call (Engine.step groups them).
        self.blocks.grow(seq, seq.num_tokens)
        seq.status, seq.slot = Status.PREFILLING, self._free_prefill_slots.pop()
        seq.admitted, self._admissions = self._admissions, self._admissions + 1
        self.prefilling.append(seq)

    def place(self, seq: Sequence) -> None:
        """Benchmarks: put ``seq`` straight into the running set (its blocks already given)."""
        if len(self.running) >= self.max_batch_size:
            raise ValueError(f"the running set is full ({self.max_batch_size} requests)")
        seq.admitted, self._admissions = self._admissions, self._admissions + 1
        seq.status, seq.slot, seq.num_cached = Status.RUNNING, len(self.running), seq.num_tokens - 1
        self.running.append(seq)

    def prefilled(self, seq: Sequence, end: int) -> None:
        """``seq``'s tokens up to ``end`` are computed (a chunk that is not its last)."""
        seq.num_cached = end

    def join(self, seq: Sequence) -> None:
        """``seq``'s prefill is done and its next token sampled: it joins the running set (its state
        moves from its prefill slot into the next packed slot)."""
        src = seq.slot
        self._end_prefill(seq)
        seq.status, seq.slot = Status.RUNNING, len(self.running)
        self.running.append(seq)
        self._moves.append((src, seq.slot))
