"""The token-level generation engine shared by both models: continuous batching over paged caches.

Requests wait in a queue; each :meth:`Engine.step` decodes every running request (one token
each, per-row positions) and prefills up to ``prefill_chunk`` prompt tokens of the requests being
admitted, oldest first; a request that finishes (stop token, stop condition, its
``max_new_tokens``, an abort, non-finite logits) leaves at once and frees its memory. The pieces
live in ``sambay/engine/`` (one concern per file). Token-level only; text, chat prompts, stop
strings and answers live in ``reasoning/``.

    engine = Engine(model)
    outs = engine.generate([Request([1, 2, 3], SamplingParams(temperature=0.0, max_new_tokens=32))])

    rid = engine.add(Request([4, 5]))          # or drive it yourself (a server does)
    while engine.has_unfinished():
        for out in engine.step():
            print(out.request_id, out.new_tokens, out.finish_reason)
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence as Seq
from dataclasses import dataclass, field

import torch
from torch import nn

from layers.sampling import sample

from .cache import kv_pool_dtype
from .engine.block_manager import BlockManager
from .engine.runner import ModelRunner
from .engine.sampling import SamplingParams, uniform
from .engine.scheduler import POLICIES, Plan, Scheduler
from .engine.sequence import Sequence, Status, decode_tokens_per_second

log = logging.getLogger("sambay.engine")

__all__ = ["Engine", "EngineStats", "Generation", "Request", "SamplingParams", "StepOutput", "sample", "uniform"]

NON_FINITE = "the logits are not finite (NaN or infinite values: broken weights or an overflow)"


@dataclass
class Request:
    """One prompt to continue, with its own sampling settings. Generation ends at a token of
    ``stop_token_ids``, when ``should_stop(tokens)`` says so (stop strings; called with the
    tokens generated so far, from the stepping thread), or after ``max_new_tokens``."""

    prompt: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    stop_token_ids: Seq[int] = ()
    should_stop: Callable[[list[int]], bool] | None = None
    request_id: str | None = None


@dataclass
class Generation:
    """The result of one request."""

    request_id: str
    tokens: list[int]  # generated tokens, the stop token included when one ended it
    finish_reason: str  # "stop" | "length" | "abort" | "error"
    prompt_tokens: int
    prefill_seconds: float  # admission to the first token
    decode_seconds: float  # first token to last token
    error: str | None = None  # what went wrong, with finish_reason "error"

    @property
    def decode_tokens_per_second(self) -> float | None:
        """See :func:`sambay.engine.sequence.decode_tokens_per_second` (the one definition)."""
        return decode_tokens_per_second(len(self.tokens), self.decode_seconds)


@dataclass(slots=True)
class StepOutput:
    """What one request produced in one step (``generation`` is set once it finished)."""

    request_id: str
    new_tokens: list[int]
    finished: bool
    finish_reason: str | None = None
    error: str | None = None
    generation: Generation | None = None


@dataclass
class EngineStats:
    """Counters over the engine's life."""

    decode_steps: int = 0
    decode_rows: int = 0  # running requests summed over decode steps
    prefill_tokens: int = 0
    preemptions: int = 0
    steps: int = 0
    seconds: float = 0.0  # wall time inside step(), over steps that only decode (no prefill chunk)
    wait_seconds: float = 0.0  # of which waiting for the device's results (the one device-to-host copy)

    @property
    def mean_batch(self) -> float:
        """Mean running batch of the decode steps."""
        return self.decode_rows / self.decode_steps if self.decode_steps else 0.0

    @property
    def host_share(self) -> float | None:
        """Share of step time the host spent not waiting for the device (scheduling, inputs, sampling
        parameters, launches, bookkeeping), over decode-only steps (a prefill chunk runs eagerly and
        may synchronize inside): on a GPU, about the share of time the device sat idle. (With
        ``lookahead`` the device also computes while the caller runs between steps, time this
        leaves out: there it is an upper bound.)"""
        return 1 - self.wait_seconds / self.seconds if self.seconds > 0 else None


@dataclass
class _Launched:
    """A plan whose decode step is on the device: what :meth:`Engine._complete` finishes."""

    plan: Plan
    decoded: list[Sequence | None]  # row i of the decode step; None: out of budget, or it failed
    results: list[torch.Tensor] = field(default_factory=list)  # (rows, 2) token + non-finite flag, on the device
    joined: list[Sequence] = field(default_factory=list)  # prefills that sampled a first token, in results' order
    host: tuple[torch.Tensor, torch.cuda.Event | None] | None = None  # results on their way to the host
    failure: tuple[list[Sequence], str] | None = None  # its decode step failed: these requests end with this
    outputs: list[StepOutput] = field(default_factory=list)  # requests that already failed


def prefill_groups(prefills: list[tuple[Sequence, int]]) -> list[tuple[list[Sequence], list[int]]]:
    """A step's prefill chunks, in order, as groups that run as one forward call (``ModelRunner
    .prefill``): consecutive chunks in consecutive prefill slots that are all whole prompts from
    position 0 (of any lengths: right-padded), or all continue from one position to one end."""
    def kind(seq: Sequence, end: int) -> tuple:
        return ("whole",) if seq.num_cached == 0 and end == seq.num_tokens else \
            ("chunk", seq.num_cached, end, end == seq.num_tokens)

    groups: list[tuple[list[Sequence], list[int]]] = []
    kinds: list[tuple] = []
    for seq, end in prefills:
        if groups and kind(seq, end) == kinds[-1] and seq.slot == groups[-1][0][-1].slot + 1:
            groups[-1][0].append(seq)
            groups[-1][1].append(end)
        else:
            groups.append(([seq], [end]))
            kinds.append(kind(seq, end))
    return groups


class Engine:
    """Continuous batching for a model of the package (SambaY or dense).

    Args:
        max_batch_size: most requests decoding at once (default 256 on CUDA, 32 on CPU).
        num_blocks: K/V blocks in the pool (block 0 is scratch). Default: on CUDA, what
            ``memory_fraction`` of the free memory holds after the per-slot state and an allowance
            for activations; on CPU, room for ``max_batch_size`` requests of the whole context.
        block_size: tokens per K/V block.
        cuda_graphs: decode steps replay graphs captured for a ladder of batch sizes (default: on
            for CUDA models). ``compile``: the step through ``torch.compile`` first.
        prefill_chunk: prompt tokens computed per step (running requests decode in every step),
            shared by the requests being prefilled in admission order: a long prompt goes in over
            several steps, many short ones in one.
        max_prefills: requests prefilled at once (each in a prefill slot of its own state; at most
            ``max_batch_size``).
        policy: ``"continuous"`` (admit as memory allows) or ``"static"`` (admit only into an empty
            batch: the baseline).
        keep_logits: every step also keeps the logits of its last computation (``runner.last_logits``:
            the last prefill chunk's, else the decode step's), for checks.
        kv_cache_dtype: ``"fp8"`` stores the paged K/V in float8 e4m3 with a scale per (token,
            head): about half the bytes per token, so about twice the tokens in the same memory and
            half the cache a decode step reads (``"auto"`` / None: the model's dtype).
        graph_sizes: the batch sizes graphs are captured for (default: the ladder 1, 2, 4, 8, 16,
            32, ... up to ``max_batch_size``, which they must include).
        lookahead: each step launches the next one's decode before reading its own tokens back,
            the next step's rows taking their last tokens from the device (see :meth:`step`), so
            the host's work between steps overlaps the device's (default: with CUDA graphs, where a
            launch returns at once; on a CPU the step would compute before returning).

    Memory is not reserved for ``max_new_tokens``: a request is admitted when the blocks for its
    prompt are free, and grows a block at a time; when the pool runs dry the most recently
    admitted request is preempted (its blocks freed, requeued first, recomputed on readmission).
    Its tokens do not change in fp32: sampling uses ``uniform(seed, step)`` and the recomputation
    computes the same function (in bf16 on a GPU the prefill kernels that recompute it round
    differently from the decode kernels that first produced it, so a token can drift).

    ``add`` and ``abort`` may be called from any thread; ``step`` from one thread at a time.
    """

    def __init__(self, model: nn.Module, *, max_batch_size: int | None = None, num_blocks: int | None = None,
                 memory_fraction: float = 0.9, block_size: int = 16, cuda_graphs: bool | None = None,
                 compile: bool = False, prefill_chunk: int = 2048, policy: str = "continuous",
                 keep_logits: bool = False, graph_sizes: Seq[int] | None = None,
                 kv_cache_dtype: str | None = None, max_prefills: int = 16, lookahead: bool | None = None) -> None:
        self.model = model.eval()
        self.device = model.device
        cuda = self.device.type == "cuda"
        self.cuda_graphs = cuda if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not cuda:
            raise ValueError("cuda_graphs needs a model on a CUDA device")
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose from {POLICIES}")
        for name, value in (("prefill_chunk", prefill_chunk), ("block_size", block_size),
                            ("max_prefills", max_prefills)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction!r}")
        self.max_batch_size = max_batch_size if max_batch_size is not None else (256 if cuda else 32)
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        self.block_size, self.prefill_chunk, self.policy = block_size, prefill_chunk, policy
        self.max_prefills = min(max_prefills, self.max_batch_size)  # more could never be admitted at once
        kv_pool_dtype(kv_cache_dtype, model.dtype)  # an unknown name fails before any memory is taken
        self.kv_cache_dtype = kv_cache_dtype or "auto"
        if num_blocks is None:
            num_blocks = self._blocks_from_memory(memory_fraction) if cuda else \
                1 + self.max_batch_size * -(-self.max_context // block_size)
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is scratch), got {num_blocks}")
        cache = model.make_cache(num_blocks, block_size, self.max_batch_size + self.max_prefills,  # + prefill slots
                                 kv_cache_dtype=self.kv_cache_dtype)
        self.blocks = BlockManager(num_blocks, block_size)
        self.scheduler = Scheduler(self.blocks, self.max_batch_size, prefill_chunk, policy, self.max_prefills)
        self.runner = ModelRunner(model, cache, self.max_batch_size, self.max_context, self.cuda_graphs, compile,
                                  keep_logits, list(graph_sizes) if graph_sizes else None)
        if lookahead and keep_logits:
            raise ValueError("keep_logits keeps the last computation's logits: it needs lookahead=False")
        self.lookahead = self.cuda_graphs and not keep_logits if lookahead is None else lookahead
        self._planned: _Launched | None = None  # with lookahead: the next step, launched
        self._deferred: Exception | None = None  # with lookahead: planning the next step failed
        self._rows: dict[int, int] = {}  # id(sequence) -> the slot that sampled its token on the device
        self.stats = EngineStats()
        self.last_batch = 0  # running requests decoded in the last step
        self._lock = threading.Lock()
        self._incoming: list[Sequence] = []
        self._aborts: set[str] = set()
        self._live: dict[str, Sequence] = {}
        self._ids = itertools.count()

    # ----- sizes
    @property
    def max_context(self) -> int:
        """Longest sequence (prompt + generation) the model supports."""
        return int(self.model.config.max_position_embeddings)

    @property
    def num_blocks(self) -> int:
        return self.blocks.num_blocks

    @property
    def free_blocks(self) -> int:
        return self.blocks.num_free

    @property
    def cache(self):  # noqa: ANN201 - the model's PagedCache subclass
        return self.runner.cache

    def _blocks_from_memory(self, fraction: float) -> int:
        """Blocks that ``fraction`` of the free GPU memory holds, after the per-slot state and an
        allowance for activations (a prefill chunk's, and the sampler's (batch, vocab) buffers)."""
        probe = self.model.make_cache(2, self.block_size, 1, device="meta", kv_cache_dtype=self.kv_cache_dtype)
        free, _ = torch.cuda.mem_get_info(self.device)
        # memory PyTorch holds in its cache but no tensor uses (e.g. a released engine's pool) is free too
        free += torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)
        cfg = self.model.config
        activations = (self.prefill_chunk * cfg.hidden_size * 4 * 48
                       + self.max_batch_size * cfg.vocab_size * 4 * 8)
        room = free * fraction - (self.max_batch_size + self.max_prefills) * probe.slot_bytes() - activations
        blocks = int(room // probe.block_bytes())
        if blocks < 2:
            raise ValueError(f"no room for a K/V pool in {free / 2**30:.1f} GiB free: lower max_batch_size "
                             f"({self.max_batch_size}) or prefill_chunk, or free GPU memory")
        return blocks

    # ----- requests
    def add(self, request: Request) -> str:
        """Queue ``request``; returns its id. Raises ValueError for a prompt that can never run."""
        prompt = request.prompt
        if not isinstance(prompt, (list, tuple)) or not prompt:
            raise ValueError(f"a request's prompt must be a non-empty list of token ids, got {prompt!r:.80}")
        vocab = int(self.model.config.vocab_size)
        if not all(isinstance(t, int) and 0 <= t < vocab for t in prompt):
            raise ValueError(f"a request's prompt must hold token ids in [0, {vocab}), got {list(prompt)!r:.80}")
        if not isinstance(request.params, SamplingParams):
            raise TypeError(f"params must be a SamplingParams, got {type(request.params).__name__}")
        budget = len(prompt) + request.params.max_new_tokens
        if budget > self.max_context:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_new_tokens ({request.params.max_new_tokens}) "
                             f"needs {budget} positions, more than the model's context of {self.max_context}; "
                             "shorten the prompt or lower max_new_tokens")
        if budget > self.blocks.capacity_tokens:
            raise ValueError(f"prompt + max_new_tokens ({budget} tokens) does not fit the whole K/V pool "
                             f"({self.blocks.capacity_tokens} tokens); give the engine more blocks")
        with self._lock:
            rid = request.request_id if request.request_id is not None else f"req-{next(self._ids)}"
            if rid in self._live or any(s.request_id == rid for s in self._incoming):
                raise ValueError(f"request id {rid!r} is already in use")
            seq = Sequence(rid, list(prompt), request.params, frozenset(request.stop_token_ids), request.should_stop,
                           self.model.uses_long_rope(budget))
            self._incoming.append(seq)
        return rid

    def abort(self, request_id: str) -> None:
        """End ``request_id`` at the next step (finish_reason "abort"; with ``lookahead``, a token
        already computing for it is dropped), freeing its memory. Unknown or finished ids are ignored."""
        with self._lock:
            self._aborts.add(request_id)

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._incoming) or self.scheduler.has_unfinished() or self._planned is not None

    # ----- one step
    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> Generation:
        if seq.status is not Status.FINISHED:
            self.scheduler.remove(seq)
        seq.finish_reason, seq.error = reason, error
        self._live.pop(seq.request_id, None)
        return Generation(seq.request_id, list(seq.tokens), reason, len(seq.prompt), seq.prefill_seconds,
                          seq.decode_seconds, error)

    def _fail(self, seqs: list[Sequence], message: str) -> list[StepOutput]:
        """End ``seqs`` with ``message`` (finish reason "error"), freeing their memory."""
        log.error("%s; ending %d request(s)", message, len(seqs))
        return [StepOutput(seq.request_id, [], True, "error", message, self._finish(seq, "error", message))
                for seq in seqs]

    def _arrivals(self) -> list[StepOutput]:
        """Queue the requests added and end those aborted since the last call."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
            aborts, self._aborts = self._aborts, set()
            for seq in incoming:  # under the lock: add() checks ids against _live
                self._live[seq.request_id] = seq
        for seq in incoming:
            self.scheduler.add(seq)
        outputs = []
        for rid in aborts:
            seq = self._live.get(rid)
            if seq is not None:
                outputs.append(StepOutput(rid, [], True, "abort", None, self._finish(seq, "abort")))
        return outputs

    def _launch(self, plan: Plan) -> _Launched | None:
        """Carry out ``plan``'s slot moves and start its decode step on the device (its prefills run
        in :meth:`_prefill`); None for an empty plan. A running sequence whose last token is still
        on the device (the last step's, not read back) takes it from there; one out of budget
        computes nothing."""
        self.stats.preemptions = self.scheduler.preemptions
        for src, dst in plan.moves:
            self.runner.move_slot(src, dst)
        decoded = [None if seq.out_of_budget else seq for seq in plan.decode]
        live = [seq for seq in decoded if seq is not None]
        if not live and not plan.prefills:
            return None
        self.stats.steps += 1
        launched = _Launched(plan, [])
        # A failure of the runner (out of memory, say) ends the requests it was computing, with the
        # error (once the tokens before it are booked: see step); the engine, its other requests and
        # its memory go on.
        if live:
            sources = [self._rows.get(id(seq), -1) for seq in plan.decode]
            try:
                launched.results.append(self.runner.decode(plan.decode, sources))
            except Exception as e:  # noqa: BLE001
                launched.failure = (live, f"the decode step failed: {type(e).__name__}: {e}")
                return launched
            self.stats.decode_steps += 1
            self.stats.decode_rows += len(live)
            self._rows = {id(seq): i for i, seq in enumerate(plan.decode)}
            for seq in live:  # its last token is in the cache now, its next one on the device
                seq.num_cached, seq.pending = seq.num_tokens, seq.pending + 1
            launched.decoded = decoded
        return launched

    def _prefill(self, launched: _Launched) -> None:
        """Run a launched plan's prefill chunks (eagerly, after its decode step on the stream); a
        sequence whose last chunk ran joins the running set, its first token on the device (the
        next decode step can take it from there)."""
        for group, ends in prefill_groups(launched.plan.prefills):
            now = time.perf_counter()
            for seq in group:
                if seq.prefill_start is None:
                    seq.prefill_start = now
            samples = launched.plan.samples(group[0], ends[0])
            try:
                out = self.runner.prefill(group, ends, samples)
            except Exception as e:  # noqa: BLE001
                launched.outputs += self._fail(group, f"the prefill failed: {type(e).__name__}: {e}")
                continue
            for seq, end in zip(group, ends):
                self.stats.prefill_tokens += end - seq.num_cached
                self.scheduler.prefilled(seq, end)
                if samples:
                    seq.pending += 1
                    self._rows[id(seq)] = seq.slot  # where runner.prefill left its token
                    self.scheduler.join(seq)
            if samples:
                launched.results.append(out)
                launched.joined += group
        if launched.results:
            # The step's one device-to-host copy, queued now: reading the tokens must not wait for
            # the next step, launched after this on the same stream.
            tokens = torch.cat(launched.results)
            done = None
            if tokens.device.type == "cuda":
                tokens = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True).copy_(tokens, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
            launched.host = (tokens, done)

    def _complete(self, launched: _Launched) -> tuple[list[StepOutput], float]:
        """Bring back a launched plan's tokens (the step's one device-to-host copy) and record who
        finished; returns the outputs and the seconds spent waiting for the copy. Tokens of
        requests that ended meanwhile (aborted, or stopped by the token before: the next step was
        launched before that one was read) are dropped; a request preempted meanwhile keeps its
        token, and recomputes it with the rest on readmission."""
        outputs = launched.outputs
        self.last_batch = sum(seq is not None for seq in launched.decoded)
        t_wait = time.perf_counter()
        rows = []
        if launched.host is not None:
            tokens, done = launched.host
            if done is not None:
                done.synchronize()
            rows = tokens.tolist()
        waited = time.perf_counter() - t_wait
        now = time.perf_counter()
        for i, (seq, (token, bad)) in enumerate(zip(launched.decoded + launched.joined, rows)):
            if seq is None:
                continue
            seq.pending -= 1
            if seq.status is Status.FINISHED:  # its token is dropped: the row is not counted either
                self.stats.decode_rows -= i < len(launched.decoded)
                continue
            if bad:
                gen = self._finish(seq, "error", NON_FINITE)
                outputs.append(StepOutput(seq.request_id, [], True, "error", NON_FINITE, gen))
                continue
            seq.append(token, now)
            try:
                reason = seq.check_stop()
            except Exception as e:  # noqa: BLE001 - a request's stop check failed: it ends, the others go on
                message = f"the stop check raised {type(e).__name__}: {e}"
                gen = self._finish(seq, "error", message)
                outputs.append(StepOutput(seq.request_id, [token], True, "error", message, gen))
                continue
            if reason is not None:
                gen = self._finish(seq, reason)
                outputs.append(StepOutput(seq.request_id, [token], True, reason, None, gen))
                continue
            outputs.append(StepOutput(seq.request_id, [token], False))
        return outputs, waited

    @torch.no_grad()
    def step(self) -> list[StepOutput]:
        """One scheduler iteration: aborts, admission, the prefill chunks sharing ``prefill_chunk``
        tokens, one decode step of the running set, then the new tokens (one device-to-host copy)
        and who finished.

        With ``lookahead``, the next iteration's plan (taking the aborts and requests that came in
        meanwhile) is made and its decode step launched before this one's tokens are read back:
        its rows take their last tokens from this step's output on the device, so the device
        computes it while the host reads and books this step's tokens and the caller handles the
        outputs (streams text, say). A request that this step ends (a stop token) is then computed
        once more in the next step, its token dropped; a request aborted or added meanwhile leaves
        or is admitted one step later."""
        if self._deferred is not None:  # the last step's planning of this one failed: as if it failed now
            error, self._deferred = self._deferred, None
            raise error
        t0 = time.perf_counter()
        outputs: list[StepOutput] = []
        if self._planned is None:
            outputs += self._arrivals()
            self._planned = self._launch(self.scheduler.schedule())
        launched, self._planned = self._planned, None
        if launched is None:
            return outputs
        self._prefill(launched)
        if self.lookahead and self.scheduler.has_unfinished():
            try:
                outputs += self._arrivals()
                self._planned = self._launch(self.scheduler.schedule())
            except Exception as e:  # noqa: BLE001 - this step's outputs are out; the next step raises it
                self._deferred = e
        done, waited = self._complete(launched)
        outputs += done
        for failed in (launched, self._planned):  # the decode step launched in this call failed:
            if failed is not None and failed.failure is not None:  # after the tokens before it, end its requests
                seqs, message = failed.failure
                failed.failure = None
                seqs = [seq for seq in seqs if seq.status is not Status.FINISHED]
                outputs += self._fail(seqs, message) if seqs else []
        ahead = self._planned
        if ahead is not None and not ahead.plan.prefills and not ahead.outputs and \
                all(seq is None or seq.status is Status.FINISHED for seq in ahead.decoded):
            # launched for requests that this step ended: nothing of it is wanted (nor counted)
            self._planned = None
            self.stats.steps -= 1
            self.stats.decode_steps -= bool(ahead.decoded)
            self.stats.decode_rows -= sum(seq is not None for seq in ahead.decoded)
        if not launched.plan.prefills and launched.decoded:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.wait_seconds += waited
        return outputs

    # ----- benchmarks
    def _idle(self, what: str) -> None:
        if self._planned is not None:
            raise RuntimeError(f"{what}() changes the running set: not while a launched step is in flight "
                               "(use lookahead=False, or call it before the first step)")

    def place(self, contexts: Seq[int], params: SamplingParams | Seq[SamplingParams] | None = None,
              generated: Seq[int] | None = None) -> list[Sequence]:
        """Benchmarks only: put requests straight into the running set at ``contexts`` tokens each,
        ``generated[i]`` (default 1) of them already sampled, without computing them. Their blocks
        are allocated and hold whatever the memory held: a decode step moves the same bytes
        whatever they hold. They then run (and finish) like any other request."""
        self._idle("place")
        generated = [1] * len(contexts) if generated is None else list(generated)
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams(temperature=0.0, max_new_tokens=self.max_context)] * len(contexts)
        seqs = []
        for ctx, g, p in zip(contexts, generated, params):
            if not 1 <= g < ctx:
                raise ValueError(f"a placed request needs 1 <= generated < context, got {g}, {ctx}")
            seq = Sequence(f"placed-{next(self._ids)}", [0] * (ctx - g), p, frozenset(), None,
                           self.model.uses_long_rope(ctx - g + p.max_new_tokens), tokens=[0] * g)
            if not self.blocks.can_grow(seq, ctx):
                raise ValueError(f"no room in the K/V pool for a request of {ctx} tokens")
            self.blocks.grow(seq, ctx)
            self.scheduler.place(seq)
            seq.first_token_time = seq.prefill_start = seq.last_token_time = time.perf_counter()
            self._live[seq.request_id] = seq
            seqs.append(seq)
        return seqs

    def jump(self, seqs: Seq[Sequence], context: int) -> None:
        """Benchmarks only: move placed running requests on to ``context`` tokens without computing them."""
        self._idle("jump")
        for seq in seqs:
            if context < seq.num_tokens or not self.blocks.can_grow(seq, context):
                raise ValueError(f"cannot move a request of {seq.num_tokens} tokens to {context}")
            seq.prompt = [0] * (context - len(seq.tokens))
            self.blocks.grow(seq, context)
            seq.num_cached = context - 1

    def generate(self, requests: Seq[Request]) -> list[Generation]:
        """Run ``requests`` to completion (with whatever else is queued); one Generation each, in order."""
        ids = [self.add(r) for r in requests]
        wanted = set(ids)
        done: dict[str, Generation] = {}
        while wanted - done.keys():
            for out in self.step():
                if out.finished and out.request_id in wanted:
                    done[out.request_id] = out.generation
        return [done[i] for i in ids]
