"""Runs the model over the cache for what the scheduler planned: batch tensors, prefill chunks,
the decode step of the running set (a CUDA graph per batch size of a ladder), sampling on the
device. No policy: which requests run, and where their state lives, is the scheduler's.

A decode step returns a (B, 2) int64 device tensor per row: the sampled token and a flag set when
the row's logits are not all finite (NaN weights, overflow). The engine copies it to the host once
per step, together with each finished prefill's (1, 2). Each sampled token is also kept on the
device at its slot (``last``): a row whose last token is not read back yet (the engine launched
this step before reading the last one's tokens) takes it from there (``sources``), without a round
trip through the host.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from layers import backends
from layers.sampling import sample

from ..cache import SCRATCH_BLOCK, CacheBatch, PagedCache
from .sampling import uniform
from .sequence import Sequence


def graph_ladder(max_batch_size: int) -> list[int]:
    """Batch sizes a decode graph is captured for: powers of two, then multiples of 16 (vLLM's
    ladder is similar), up to ``max_batch_size``."""
    sizes = [b for b in (1, 2, 4, 8) if b < max_batch_size]
    sizes += list(range(16, max_batch_size, 16))
    return sizes + [max_batch_size]


def decode_step_fn(model: nn.Module, cache: PagedCache, ints: torch.Tensor, floats: torch.Tensor,
                   block_table: torch.Tensor, last: torch.Tensor, keep_logits: bool
                   ) -> Callable[[int, int], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
    """The decode step of rows 0..n-1 over the static input buffers (reading ``width`` block-table
    columns): the function a CUDA graph captures. ``ints`` (6, B) holds each row's token, position,
    write slot, top-k, LongRoPE flag and source (-1, or the slot of ``last``, the tokens sampled
    last at each slot, that holds its token), ``floats`` (3, B) its temperature, top-p and uniform
    number: two buffers, so a step's inputs go to the device in two copies."""
    def step(n: int, width: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ids, positions, write_slots, top_k, long, source = ints[:, :n]
        ids = torch.where(source >= 0, last[source.clamp(min=0)], ids)
        temperature, top_p, u = floats[:, :n]
        batch = CacheBatch(0, block_table[:n, :width], positions, write_slots, long != 0)
        logits = model.run(ids[:, None], cache, batch)[:, -1]
        out = sample(logits, temperature, top_p, top_k, u)
        return (out, logits) if keep_logits else out
    return step


class ModelRunner:
    """The model, its paged cache and the decode step over it.

    ``cuda_graphs``: decode steps replay a graph captured for the smallest ladder size that holds
    the running set; padding rows use free slots (n..size-1 are free: running requests are packed)
    and the scratch block. ``compile``: the step goes through ``torch.compile`` first (one static
    graph per batch size).
    """

    def __init__(self, model: nn.Module, cache: PagedCache, max_batch_size: int, max_context: int,
                 cuda_graphs: bool, compile: bool, keep_logits: bool = False,
                 graph_sizes: list[int] | None = None) -> None:
        self.model, self.cache = model, cache
        self.device = model.device
        self.block_size = cache.block_size
        self.max_batch_size = max_batch_size
        self.max_blocks = -(-max_context // cache.block_size)
        self.cuda_graphs = cuda_graphs
        self.ladder = sorted(set(graph_sizes)) if graph_sizes else graph_ladder(max_batch_size)
        if self.ladder[-1] != max_batch_size or self.ladder[0] < 1:
            raise ValueError(f"graph sizes must lie in 1..max_batch_size and include it, got {graph_sizes}")
        self.keep_logits = keep_logits  # checks: the last step's logits in last_logits (costs a (B, V) copy)
        self.last_logits: torch.Tensor | None = None
        B, dev = max_batch_size, self.device
        # Static inputs of the decode step (a captured graph reads these buffers), written from
        # pinned host buffers of the same layout: two asynchronous copies a step.
        self.ints = torch.zeros(6, B, dtype=torch.long, device=dev)
        self.floats = torch.zeros(3, B, dtype=torch.float32, device=dev)
        self.block_table = torch.zeros(B, self.max_blocks, dtype=torch.int32, device=dev)
        pin = dev.type == "cuda"
        self.last = torch.zeros(cache.num_slots, dtype=torch.long, device=dev)  # the last token sampled at each slot
        self._host_ints = torch.zeros(6, B, dtype=torch.long, pin_memory=pin)
        self._host_floats = torch.zeros(3, B, dtype=torch.float32, pin_memory=pin)
        self._copied = torch.cuda.Event() if pin else None  # the host buffers are free again once it is done
        # Who holds each row of the block table, and how many of its blocks are written there: a
        # step sends only the entries that changed.
        self._owner: list[tuple[Sequence, int] | None] = [None] * B
        self._filled = [0] * B
        self.compiled = compile
        # The step is a closure over the model, cache and buffers, not a bound method: a runner that
        # held itself (through self._step) would outlive its engine until a garbage collection,
        # with the whole K/V pool; the next engine would then size its pool from what is left.
        step = decode_step_fn(model, cache, self.ints, self.floats, self.block_table, self.last, keep_logits)
        if compile:
            # One static graph per batch size. Inductor rounds between fused ops where eager rounds
            # (emulate_precision_casts), so compiled numerics are eager's; no matmul padding search.
            step = torch.compile(step, fullgraph=True, dynamic=False,
                                 options={"emulate_precision_casts": True, "shape_padding": False})
        self._step: Callable[[int, int], torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = step
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if cuda_graphs:
            self._capture()

    # ----- the decode step
    def _capture(self) -> None:
        """One graph per ladder size, largest first, sharing one memory pool. The warm-up runs
        write only into free slots and the scratch block (every row is a padding row)."""
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        # The model's kernels, active in this thread around (never inside) the compiled step.
        with torch.no_grad(), backends.activate(self.model.backends):
            for n in reversed(self.ladder):
                with torch.cuda.stream(stream):
                    for _ in range(3):  # kernel selection, Triton / inductor compilation
                        self._step(n, self.max_blocks)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    out = self._step(n, self.max_blocks)
                self.graphs[n] = (graph, out)

    def _width(self, seqs: list[Sequence]) -> int:
        """Block-table columns an eager step reads: those in use (static shapes read them all)."""
        return self.max_blocks if self.cuda_graphs or self.compiled else max(len(s.blocks) for s in seqs)

    def decode(self, seqs: list[Sequence], sources: list[int] | None = None) -> torch.Tensor:
        """One token for every running sequence (row i = slot i) -> (n, 2) on the device.
        ``sources[i]``: the slot that sampled sequence i's last token, when that token is not read
        back yet (``seq.pending``). A sequence out of budget (its last token sampled, not yet read
        back) computes nothing: a padding row in its place."""
        n = len(seqs)
        size = next(b for b in self.ladder if b >= n) if self.cuda_graphs else n
        # Per row: (token, position, write slot, top-k, LongRoPE, source) and (temperature, top-p,
        # uniform number). A padding row (and one out of budget): position 0 of the scratch block, greedy.
        bs, pad_ints, pad_floats = self.block_size, (0, 0, SCRATCH_BLOCK * self.block_size, 0, 0, -1), (0.0, 1.0, 0.0)
        ints, floats = [pad_ints] * size, [pad_floats] * size
        rows, cols, blocks = [], [], []  # block-table entries that changed since the last step
        for i, seq in enumerate(seqs):
            if not seq.out_of_budget:
                sp, p = seq.params, seq.num_tokens - 1  # the last sampled token goes in at its position
                ints[i] = (0 if seq.pending else seq.tokens[-1], p, seq.blocks[p // bs] * bs + p % bs, sp.top_k,
                           int(seq.long_rope), sources[i] if seq.pending else -1)
                # greedy rows never read their uniform number: skip its hash (a few us a row)
                floats[i] = (sp.temperature, sp.top_p, uniform(sp.seed, seq.generated) if sp.temperature > 0 else 0.0)
            if self._owner[i] != (seq, seq.admitted):  # a new occupant of slot i (or readmitted)
                self._owner[i], self._filled[i] = (seq, seq.admitted), 0
            new = range(self._filled[i], len(seq.blocks))
            rows += [i] * len(new)
            cols += new
            blocks += seq.blocks[self._filled[i]:]
            self._filled[i] = len(seq.blocks)
        for i in range(n, size):
            if self._owner[i] is not None:
                self._owner[i] = None
                rows.append(i)
                cols.append(0)
                blocks.append(SCRATCH_BLOCK)
        w = self._width(seqs)
        if self._copied is not None:
            self._copied.synchronize()  # the last step's copies have read the host buffers
        self._host_ints[:, :size] = torch.tensor(ints, dtype=torch.long).T
        self._host_floats[:, :size] = torch.tensor(floats, dtype=torch.float32).T
        self.ints.copy_(self._host_ints, non_blocking=True)
        self.floats.copy_(self._host_floats, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        if rows:  # a few entries a step: a new block every block_size tokens per row
            entries = torch.tensor([rows, cols, blocks], dtype=torch.long).to(self.device, non_blocking=True)
            self.block_table.index_put_((entries[0], entries[1]), entries[2].int())
        if self.cuda_graphs:
            graph, out = self.graphs[size]
            graph.replay()  # the next replay overwrites the static output: clone what is kept
        else:
            with torch.no_grad(), backends.activate(self.model.backends):
                out = self._step(n, w)
        if self.keep_logits:
            out, logits = out
            self.last_logits = logits[:n].clone()
        self.last[:n] = out[:n, 0]  # the next step's sources
        return out[:n].clone()

    # ----- prefill
    @torch.no_grad()
    def prefill(self, seqs: list[Sequence], ends: list[int], sample_next: bool) -> torch.Tensor | None:
        """Compute each of ``seqs`` up to its ``ends[i]`` from their common ``num_cached`` (their
        prefill slots consecutive, ``seqs[0].slot`` first) in one forward call of ``len(seqs)``
        rows; when ``sample_next``, sample each one's next token -> (len(seqs), 2) on the device.
        Rows of different lengths (from position 0 only) are right-padded to the longest, the pads
        written to the scratch block. A group costs about what one request costs: an eager
        prefill is host-bound."""
        seq0, dev, bs = seqs[0], self.device, self.block_size
        start, end = seq0.num_cached, max(ends)
        assert all(s.num_cached == start and s.slot == seq0.slot + i for i, s in enumerate(seqs))
        assert start == 0 or len(set(ends)) == 1, "rows of different lengths start at position 0"
        n = -(-end // bs)
        ids = torch.tensor([s.tokens_between(start, e) + [0] * (end - e) for s, e in zip(seqs, ends)], device=dev)
        rows = torch.tensor([s.blocks[:n] + [SCRATCH_BLOCK] * (n - len(s.blocks[:n])) for s in seqs],
                            dtype=torch.int32, device=dev)
        # With static decode shapes the table is as wide as the decode step's, so the last token's
        # paged attention (SambaY's cross-decoder) runs the kernel variants the decode graphs built
        table = rows
        if self.cuda_graphs or self.compiled:
            table = torch.full((len(seqs), self.max_blocks), SCRATCH_BLOCK, dtype=torch.int32, device=dev)
            table[:, :n] = rows
        positions = torch.arange(start, end, device=dev)
        write = table.long()[:, positions // bs] * bs + positions % bs
        lengths = None
        if min(ends) < end:
            lengths = torch.tensor(ends, device=dev)
            write = write.masked_fill(positions >= lengths[:, None], SCRATCH_BLOCK * bs)  # pads: never read
        long = torch.tensor([s.long_rope for s in seqs], device=dev)
        batch = CacheBatch(seq0.slot, table, positions, write.reshape(-1), long, start, lengths)
        with backends.activate(self.model.backends):
            logits = self.model.run(ids, self.cache, batch, logits_to_keep=1)[:, -1]
        if self.keep_logits:
            self.last_logits = logits
        if not sample_next:
            return None
        params = [s.params for s in seqs]
        f = lambda xs, dtype=torch.float32: torch.tensor(xs, dtype=dtype, device=dev)  # noqa: E731
        out = sample(logits, f([float(p.temperature) for p in params]), f([float(p.top_p) for p in params]),
                     f([p.top_k for p in params], torch.long),
                     f([uniform(p.seed, len(s.tokens)) for p, s in zip(params, seqs)]))
        self.last[seq0.slot:seq0.slot + len(seqs)] = out[:, 0]  # the first decode step's sources
        return out

    def move_slot(self, src: int, dst: int) -> None:
        self.cache.move_slot(src, dst)
