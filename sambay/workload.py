"""The workload benchmark: jobs end to end through the whole engine (scheduler, sampling, host
loop), static batching beside continuous, SambaY beside dense.

N requests with a ``prompt``-token prompt and output lengths drawn from a seeded distribution,
generation forced to the drawn length (no stop tokens: vLLM's ``ignore_eos``):

* ``fixed``: every output ``max_len`` tokens (the paper's setting);
* ``uniform``: uniform in [``min_len``, ``max_len``];
* ``lognormal``: log-normal with median ``median`` and sigma ``sigma``, capped at ``max_len``.

Two ways to measure, per (model, policy):

* **end to end** (:func:`run_end_to_end`): every request from its admission to its last token;
* **steady state**, for jobs too long to run to completion. Continuous (:func:`run_steady_state`):
  the running set starts at the stationary mix of context lengths (each running request's length
  drawn length-biased, its progress uniform in it: what a long-running continuous engine holds
  at a random moment), placed without computing it (``Engine.place``), then real admissions and
  completions run for ``steps`` steps; validated against an end-to-end run at a small scale
  (:func:`validate_steady_state`), whose saturated phase (while requests wait) it should match.
  Static (:func:`run_static_life`): the whole job through static batching, simulated step by
  step with the engine's own scheduler and no model (:func:`scheduled_job`: who runs at each step
  of each batch, pool-limited admission and preemption, the recomputation of what was preempted
  in a later batch), its step time timed at five moments of the first batch, from the full batch
  to its last rows, and fitted (affine in rows and K/V read), plus its prefill calls; checked
  against a real static run on the CPU. A single moment of a static batch is no estimate of it:
  early moments read little K/V with every row running, late ones run a few rows.
  Static padded (``run_static_life(padded=True)``, steady state only): the static engine this
  package had before continuous batching, as vLLM compared against: each row reserves
  ``prompt + max_len`` tokens at admission (so the pool bounds the batch), and a finished row
  keeps its place, decoding (and reading its K/V) until the batch's longest row ends. The
  ``static`` policy above is a stronger baseline than that: its finished rows leave and it
  reserves nothing.

Reported: tokens/s (generated tokens per wall second, prefill included), mean running batch,
preemptions, peak memory, the bytes-model throughput at the measured occupancy and context mix
(every decode step's bytes over the bandwidth), and the concurrent requests against what
reserving ``prompt + max_len`` per request would allow in the same pool.
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .bench import step_bytes
from .engine.block_manager import BlockManager
from .engine.scheduler import Scheduler
from .engine.sequence import Sequence
from .generate import Engine, Request, SamplingParams, prefill_groups

WORKLOADS = ("fixed", "uniform", "lognormal")
POLICIES = ("static_padded", "static", "continuous")  # as reported; static_padded only in steady state


@dataclass
class WorkloadSettings:
    workload: str = "lognormal"
    requests: int = 256
    prompt: int = 2048
    max_len: int = 32768
    min_len: int = 1024  # uniform
    median: int = 8192  # lognormal
    sigma: float = 0.8  # lognormal
    seed: int = 0
    max_batch_size: int | None = None
    num_blocks: int | None = None  # the pool, the same for both policies (default: from memory)
    steady_steps: int | None = None  # None: end to end; else the steady-state method for this many steps
    repeats: int = 1  # runs per policy, alternating static and continuous; the fastest of each is kept
    kv_cache_dtype: str | None = None  # "fp8": the paged K/V in float8 e4m3 (see sambay.cache)
    profile_host: bool = False  # steady state: a cProfile of the continuous engine's steps (the host loop)

    @classmethod
    def tiny(cls, workload: str = "lognormal") -> "WorkloadSettings":
        """CPU smoke run (tiny models): about a minute for both models and both policies."""
        # A pool of 90 blocks of 16 tokens: max-length reservation (16 + 224 tokens) admits 6 requests.
        # Two alternating runs per policy: a shared CPU's load then hits both alike.
        return cls(workload=workload, requests=96, prompt=16, max_len=224, min_len=16, median=48, sigma=0.8,
                   max_batch_size=16, num_blocks=91, repeats=2)


def draw_lengths(s: WorkloadSettings, n: int | None = None, seed: int | None = None) -> list[int]:
    """``n`` output lengths of the workload (seeded)."""
    if s.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {s.workload!r}; choose from {WORKLOADS}")
    rng = random.Random(s.seed if seed is None else seed)
    n = s.requests if n is None else n
    if s.workload == "fixed":
        return [s.max_len] * n
    if s.workload == "uniform":
        return [rng.randint(s.min_len, s.max_len) for _ in range(n)]
    return [max(1, min(s.max_len, round(rng.lognormvariate(math.log(s.median), s.sigma)))) for _ in range(n)]


def stationary_mix(s: WorkloadSettings, n: int, seed: int) -> list[tuple[int, int]]:
    """(output length, tokens generated so far) of ``n`` requests running at a random moment of a
    saturated continuous engine: lengths length-biased (a request runs for as many steps as it has
    tokens), progress uniform within the length."""
    rng = random.Random(seed)
    pool = draw_lengths(s, 4096, seed)
    picks = rng.choices(pool, weights=pool, k=n)
    return [(L, rng.randint(1, max(1, L - 1))) for L in picks]


class _Meter:
    """Per-step bookkeeping of a run: the bytes model, occupancy, peak blocks."""

    def __init__(self, model: nn.Module, engine: Engine, bandwidth: float) -> None:
        self.model, self.engine, self.bandwidth = model, engine, bandwidth
        self.floor_seconds = 0.0
        self.decoded = 0
        self.peak_blocks = 0
        self.max_running = 0
        self.saturated_tokens, self.saturated_seconds = 0, 0.0
        # step_bytes is affine: weights + rows * (per-row state + context * per-token K/V reads)
        cache = engine.cache
        self.weights = step_bytes(model, cache, 0, 0)
        self.per_row = step_bytes(model, cache, 0, 1) - self.weights
        self.per_token = step_bytes(model, cache, 1, 1) - self.weights - self.per_row

    def step(self) -> int:
        """One engine step; returns the tokens it produced."""
        running = list(self.engine.scheduler.running)
        waiting = bool(self.engine.scheduler.waiting)
        t = time.perf_counter()
        outs = self.engine.step()
        dt = time.perf_counter() - t
        new = sum(len(o.new_tokens) for o in outs)
        self.max_running = max(self.max_running, len(running))
        if running:
            # bytes of this decode step at its occupancy and context mix
            ctx = sum(s.num_tokens for s in running)
            self.floor_seconds += (self.weights + len(running) * self.per_row + ctx * self.per_token) / self.bandwidth
            self.decoded += len(running)
        if waiting:
            self.saturated_tokens += new
            self.saturated_seconds += dt
        self.peak_blocks = max(self.peak_blocks, self.engine.num_blocks - 1 - self.engine.free_blocks)
        return new


def _engine(model: nn.Module, s: WorkloadSettings, policy: str) -> Engine:
    return Engine(model, max_batch_size=s.max_batch_size, num_blocks=s.num_blocks, policy=policy,
                  kv_cache_dtype=s.kv_cache_dtype)


def _report(model: nn.Module, engine: Engine, meter: _Meter, s: WorkloadSettings, tokens: int, seconds: float,
            steps: int, cpu_seconds: float) -> dict[str, Any]:
    cache = engine.cache
    pool_tokens = (engine.num_blocks - 1) * engine.block_size
    reserved = min(engine.max_batch_size, pool_tokens // (s.prompt + s.max_len))
    device = model.device
    return {
        "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds if seconds > 0 else None,
        # this process's CPU seconds: on a CPU shared with other jobs, what the run itself cost
        "cpu_seconds": cpu_seconds, "tokens_per_cpu_s": tokens / cpu_seconds if cpu_seconds > 0 else None,
        "steps": steps, "mean_batch": engine.stats.mean_batch, "preemptions": engine.stats.preemptions,
        # the host loop's share of step time (scheduling, inputs, bookkeeping; GPU idle meanwhile)
        "host_share": engine.stats.host_share if device.type == "cuda" else None,
        "max_running": meter.max_running,
        "prefill_tokens": engine.stats.prefill_tokens,
        "bytes_model_tokens_per_s": meter.decoded / meter.floor_seconds if meter.floor_seconds > 0 else None,
        "saturated_tokens_per_s": (meter.saturated_tokens / meter.saturated_seconds
                                   if meter.saturated_seconds > 0 else None),
        "peak_kv_bytes": meter.peak_blocks * cache.block_bytes() + (engine.max_batch_size + 1) * cache.slot_bytes(),
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "pool_blocks": engine.num_blocks, "block_size": engine.block_size,
        "max_batch_size": engine.max_batch_size,
        "reservation_concurrency": reserved,  # requests of prompt + max_len that fit the pool at once
        "concurrency_vs_reservation": engine.stats.mean_batch / reserved if reserved else None,
    }


def _requests(s: WorkloadSettings, lengths: list[int], vocab: int, seed: int) -> list[Request]:
    g = torch.Generator().manual_seed(seed)
    return [Request(torch.randint(0, vocab, (s.prompt,), generator=g).tolist(),
                    SamplingParams(temperature=0.0, max_new_tokens=L)) for L in lengths]


@torch.no_grad()
def run_end_to_end(model: nn.Module, s: WorkloadSettings, policy: str, bandwidth: float) -> dict[str, Any]:
    """Every request of the workload through ``policy`` from the first admission to the last token."""
    engine = _engine(model, s, policy)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    meter = _Meter(model, engine, bandwidth)
    for r in _requests(s, draw_lengths(s), model.config.vocab_size, s.seed):
        engine.add(r)
    tokens = steps = 0
    t0, c0 = time.perf_counter(), time.process_time()
    while engine.has_unfinished():
        tokens += meter.step()
        steps += 1
    return {"method": "end_to_end", **_report(model, engine, meter, s, tokens, time.perf_counter() - t0, steps,
                                              time.process_time() - c0)}


def place_stationary(engine: Engine, s: WorkloadSettings) -> list[tuple[int, int]]:
    """Put the stationary mix into ``engine``'s running set, as many requests as its pool holds;
    returns their (output length, tokens generated). They are placed oldest first (most tokens
    generated: in a saturated engine a request's progress is its age), so the engine's admission
    order, which picks who is preempted when the pool runs dry (the most recent), is a real run's:
    placed in the mix's random order, a request 30K tokens in could be the one preempted and
    recomputed, where a real run preempts one that has just begun."""
    room = (engine.num_blocks - 1) * engine.block_size
    placed, used = [], 0
    for L, g in stationary_mix(s, engine.max_batch_size, s.seed + 2):  # as many as the pool holds
        need = -(-(s.prompt + g + 1) // engine.block_size) * engine.block_size
        if used + need > room:
            break
        placed.append((L, g))
        used += need
    placed.sort(key=lambda lg: -lg[1])
    params = [SamplingParams(temperature=0.0, max_new_tokens=L) for L, _ in placed]
    engine.place([s.prompt + g for _, g in placed], params, [g for _, g in placed])
    return placed


@torch.no_grad()
def run_steady_state(model: nn.Module, s: WorkloadSettings, policy: str, bandwidth: float) -> dict[str, Any]:
    """Continuous: the running set placed at the stationary mix, then ``steady_steps`` real steps
    with admissions and completions. Static: :func:`run_static_life` (the whole job, simulated)."""
    if policy == "static":
        return run_static_life(model, s, bandwidth)
    engine = _engine(model, s, policy)
    placed = place_stationary(engine, s)
    for r in _requests(s, draw_lengths(s, s.requests, s.seed + 3), model.config.vocab_size, s.seed):
        engine.add(r)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)
    meter = _Meter(model, engine, bandwidth)
    tokens = 0
    profiler = cProfile.Profile() if s.profile_host else None
    t0, c0 = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    for _ in range(s.steady_steps or 0):
        if not engine.has_unfinished():
            break
        tokens += meter.step()
    if profiler is not None:
        profiler.disable()
    report = _report(model, engine, meter, s, tokens, time.perf_counter() - t0, s.steady_steps or 0,
                     time.process_time() - c0)
    if profiler is not None:  # where the host's time goes (waiting for the device included: the tokens' copy)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
        report["host_profile"] = text.getvalue()
    return {"method": "steady_state", "placed": len(placed), **report}


@dataclass
class StaticJob:
    """A static job's decode steps, simulated: per step, the rows decoding and the sum of their
    contexts (tokens held); the forward calls its prefills take; its preemptions and batches."""

    rows: list[int]
    contexts: list[int]
    prefill_calls: int
    preemptions: int
    batches: int
    first_batch_steps: int  # the first batch's decode steps: all its rows fresh


def scheduled_job(lengths: list[int], prompt: int, engine: Engine) -> StaticJob:
    """Every request of ``lengths`` (output tokens each, after a ``prompt``-token prompt) through
    the static policy of the engine's own scheduler and block manager (fresh ones of ``engine``'s sizes) without the
    model: each step's plan is carried out as ``Engine.step`` does (prefill groups, a token per
    decoding row), so admission, preemption and recomputation are the engine's, exactly."""
    blocks = BlockManager(engine.num_blocks, engine.block_size)
    scheduler = Scheduler(blocks, engine.max_batch_size, engine.prefill_chunk, "static", engine.max_prefills)
    for i, L in enumerate(lengths):
        scheduler.add(Sequence(f"sim-{i}", [0] * prompt, SamplingParams(temperature=0.0, max_new_tokens=L),
                               frozenset(), None, False))
    rows: list[int] = []
    contexts: list[int] = []
    calls = batches = 0
    first = None  # decode steps of the first batch
    decoding = False
    while scheduler.has_unfinished():
        plan = scheduler.schedule()
        decode = plan.decode
        if decode:
            batches += not decoding
            rows.append(len(decode))
            contexts.append(sum(seq.num_tokens for seq in decode))
        elif decoding and first is None:  # the first batch emptied
            first = len(rows)
        decoding = bool(decode)
        ends: dict[int, int] = {}  # id(seq) -> end, for the prefill chunks that sample a token
        for group, group_ends in prefill_groups(plan.prefills):
            calls += 1
            sampled = plan.samples(group[0], group_ends[0])
            for seq, end in zip(group, group_ends):
                if sampled:
                    ends[id(seq)] = end
                else:
                    scheduler.prefilled(seq, end)
        for seq in decode + [seq for seq, _ in plan.prefills if id(seq) in ends]:
            joining = id(seq) in ends
            seq.num_cached = ends[id(seq)] if joining else seq.num_cached + 1
            seq.tokens.append(0)
            if len(seq.tokens) >= seq.params.max_new_tokens:
                scheduler.remove(seq)
            elif joining:
                scheduler.join(seq)
    return StaticJob(rows, contexts, calls, scheduler.preemptions, batches, len(rows) if first is None else first)


def padded_job(lengths: list[int], prompt: int, batch: int, group: int) -> StaticJob:
    """The static engine before continuous batching: batches of ``batch`` requests (what the pool
    holds when each reserves prompt + max length: nothing is preempted), prefilled ``group`` to a
    call, and every admitted row decodes until its batch's longest ends (finished rows too, their
    K/V growing). A request of L tokens gets its first from the prefill, then decodes L - 1 steps."""
    rows: list[int] = []
    contexts: list[int] = []
    calls = batches = 0
    first = None
    for i in range(0, len(lengths), batch):
        admitted = lengths[i:i + batch]
        batches += 1
        calls += -(-len(admitted) // group)
        steps = max(admitted) - 1
        rows += [len(admitted)] * steps
        contexts += [len(admitted) * (prompt + 1 + t) for t in range(steps)]
        first = len(rows) if first is None else first
    return StaticJob(rows, contexts, calls, 0, batches, first or 0)


@torch.no_grad()
def run_static_life(model: nn.Module, s: WorkloadSettings, bandwidth: float, points: int = 5,
                    steps_per_point: int = 8, padded: bool = False) -> dict[str, Any]:
    """Static batching over the whole job, for jobs too long to run: the ``s.requests`` requests
    go through the engine's scheduler without the model (:func:`scheduled_job`: who runs at each
    step of every batch, preemptions and their recomputation); real decode steps are timed at
    ``points`` moments of the first batch's life (its rows placed at that context,
    ``Engine.place``), from the full batch down to its last rows; a fit ``seconds = a + b * rows + c * (sum of the rows' contexts)`` of those steps (decode
    time is affine in rows and in the K/V they read) is summed over every step of the job, plus
    its prefill calls (one timed). tokens/s = every request's tokens / that time.

    ``padded``: the static engine before continuous batching (:func:`padded_job`): batches of
    as many requests as reserving ``prompt + max_len`` each lets the pool hold (at most
    ``max_batch_size``); the moments are then spread evenly over the first batch (its rows do
    not change)."""
    if points < 2:
        raise ValueError(f"a static batch's life needs points >= 2 timed moments, got {points}")
    engine = _engine(model, s, "static")
    bs = engine.block_size
    pool_blocks = engine.num_blocks - 1
    pool_tokens = pool_blocks * bs
    reserved = min(engine.max_batch_size, pool_tokens // (s.prompt + s.max_len))
    if padded and reserved < 1:
        raise ValueError(f"the pool ({pool_tokens} tokens) cannot reserve one request of {s.prompt} + {s.max_len} tokens")
    lengths = draw_lengths(s)  # the requests an end-to-end run of the workload takes
    group = max(1, min(engine.max_batch_size, engine.prefill_chunk // s.prompt, engine.max_prefills))
    job = padded_job(lengths, s.prompt, reserved, group) if padded else scheduled_job(lengths, s.prompt, engine)
    life = job.rows[:job.first_batch_steps]  # the first batch: fresh rows, one context per step
    if not life:
        raise ValueError(f"no decode step to time: every output of the batch is at most 1 token, or the pool "
                         f"({pool_blocks} blocks) holds no request of {s.prompt} prompt tokens")
    # the last moment whose rows still run (and stay within their lengths) for the timed steps
    last = max(0, len(life) - steps_per_point - 3)
    if padded:
        moments = sorted({round(last * j / (points - 1)) for j in range(points)})
    else:  # moments at which 100%, ..., 1 row(s) of the batch still run
        targets = [max(1, round(life[0] * (1 - j / (points - 1)))) for j in range(points)]
        moments = sorted({next((t for t in range(last + 1) if life[t] <= target), last) for target in targets})
    meter = _Meter(model, engine, bandwidth)
    samples = []  # (rows, context of each, seconds per step)
    for t in moments:
        ctx = s.prompt + t + 1  # rows that still fit once the timed steps have grown them
        rows = min(life[t], pool_blocks // -(-(ctx + steps_per_point + 2) // bs))
        seqs = engine.place([ctx] * rows, SamplingParams(temperature=0.0, max_new_tokens=t + steps_per_point + 3),
                            [t + 1] * rows)
        engine.step()  # warm
        t0 = time.perf_counter()
        for _ in range(steps_per_point):
            engine.step()
        samples.append((rows, ctx + 1 + steps_per_point // 2, (time.perf_counter() - t0) / steps_per_point))
        for seq in seqs:
            engine.abort(seq.request_id)
        engine.step()
    # least squares for (a, b, c) in seconds = a + b * rows + c * rows * context
    X = torch.tensor([[1.0, r, r * c] for r, c, _ in samples], dtype=torch.float64)
    y = torch.tensor([sec for _, _, sec in samples], dtype=torch.float64)
    coef = torch.linalg.lstsq(X, y[:, None]).solution[:, 0] if len(samples) >= 3 else torch.tensor([y.mean(), 0, 0])
    a, b, c = (float(v) for v in coef)
    decode_s = sum(a + b * n + c * ctx for n, ctx in zip(job.rows, job.contexts))
    floor_s = sum((meter.weights + n * meter.per_row + ctx * meter.per_token) / bandwidth
                  for n, ctx in zip(job.rows, job.contexts))
    prefill_s = _prefill_call_seconds(model, engine, s, group) * job.prefill_calls
    tokens = sum(lengths)
    seconds = decode_s + prefill_s
    mean_batch = sum(job.rows) / len(job.rows)
    return {"method": "padded_job" if padded else "static_job", "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "tokens_per_cpu_s": None, "steps": len(job.rows),
            "batches": job.batches, "mean_batch": mean_batch, "max_running": max(job.rows),
            "preemptions": job.preemptions, "prefill_seconds": prefill_s, "prefill_calls": job.prefill_calls,
            "fit_seconds": {"a": a, "b_per_row": b, "c_per_row_token": c},
            "samples": [{"rows": r, "context": ctx, "step_s": sec} for r, ctx, sec in samples],
            "fit_max_rel_err": max(abs(a + b * r + c * r * ctx - sec) / sec for r, ctx, sec in samples),
            "bytes_model_tokens_per_s": sum(job.rows) / floor_s, "host_share": None,
            "pool_blocks": engine.num_blocks, "block_size": bs, "max_batch_size": engine.max_batch_size,
            "reservation_concurrency": reserved,
            "concurrency_vs_reservation": mean_batch / reserved if reserved else None,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(model.device) if model.device.type == "cuda" else None}


def _prefill_call_seconds(model: nn.Module, engine: Engine, s: WorkloadSettings, group: int) -> float:
    """Seconds of one prefill call of ``group`` prompts of the workload (the engine admits whole
    prompts that fit ``prefill_chunk`` together in one forward call). Timed after a warm-up."""
    g = torch.Generator().manual_seed(s.seed)
    reqs = [Request(torch.randint(0, model.config.vocab_size, (s.prompt,), generator=g).tolist(),
                    SamplingParams(temperature=0.0, max_new_tokens=1)) for _ in range(group)]
    engine.generate(reqs)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    t0 = time.perf_counter()
    engine.generate(reqs)
    return time.perf_counter() - t0


def run_workload(model: nn.Module, s: WorkloadSettings, bandwidth: float,
                 log: Any = print) -> dict[str, Any]:
    """Static and continuous for one model: end to end, or the steady-state method when
    ``s.steady_steps`` is set (then the padded static batch's estimate too); the fastest of
    ``s.repeats`` alternating runs per policy."""
    out: dict[str, Any] = {}
    run = run_end_to_end if s.steady_steps is None else run_steady_state
    for _ in range(s.repeats):
        for policy in ("static", "continuous"):
            r = run(model, s, policy, bandwidth)
            if policy not in out or r["tokens_per_s"] > out[policy]["tokens_per_s"]:
                out[policy] = r
    if s.steady_steps is not None:  # the static engine before continuous batching: simulated only
        out["static_padded"] = run_static_life(model, s, bandwidth, padded=True)
    for policy in POLICIES:
        if policy in out:
            r = out[policy]
            log(f"    {policy}: {r['tokens_per_s']:.1f} tok/s, mean batch {r['mean_batch']:.1f}, "
                f"preemptions {r['preemptions']}")
    out["continuous_vs_static"] = out["continuous"]["tokens_per_s"] / out["static"]["tokens_per_s"]
    if "static_padded" in out:
        out["continuous_vs_static_padded"] = out["continuous"]["tokens_per_s"] / out["static_padded"]["tokens_per_s"]
    cpu = out["static"]["tokens_per_cpu_s"]
    out["continuous_vs_static_cpu_time"] = out["continuous"]["tokens_per_cpu_s"] / cpu if cpu else None
    return out


def validate_steady_state(model: nn.Module, s: WorkloadSettings, bandwidth: float) -> dict[str, Any]:
    """The steady-state method against a complete end-to-end run of the same (small) workload:
    its tokens/s beside the end-to-end run's over its saturated phase (while requests waited)."""
    e2e = run_end_to_end(model, s, "continuous", bandwidth)
    steps = max(50, e2e["steps"] // 3)
    steady = run_steady_state(model, WorkloadSettings(**{**asdict(s), "steady_steps": steps}), "continuous", bandwidth)
    sat = e2e["saturated_tokens_per_s"]
    return {"end_to_end": e2e, "steady_state": steady,
            "steady_vs_saturated_end_to_end": steady["tokens_per_s"] / sat if sat else None}


def table(section: dict[str, Any]) -> str:
    """Plain-text rows of a ``workload`` section of results.json."""
    lines = [f"{'workload':>10} {'model':>7} {'policy':>13} {'tok/s':>9} {'bytes model':>12} {'mean batch':>11} "
             f"{'preempt':>8} {'vs reserve':>11} {'host':>6}"]
    for w, models in section.items():
        for kind, r in models.items():
            for policy in (p for p in POLICIES if p in r):
                x = r[policy]
                bm = x["bytes_model_tokens_per_s"]
                vs = x["concurrency_vs_reservation"]
                host = x.get("host_share")
                lines.append(f"{w:>10} {kind:>7} {policy.replace('_', ' '):>13} {x['tokens_per_s']:>9.1f} "
                             f"{'-' if bm is None else f'{bm:.0f}':>12} {x['mean_batch']:>11.1f} {x['preemptions']:>8} "
                             f"{'-' if vs is None else f'{vs:.2f}x':>11} {'-' if host is None else f'{host:.1%}':>6}")
            cpu = r["continuous_vs_static_cpu_time"]
            lines.append(f"{'':>10} {kind:>7} continuous / static: {r['continuous_vs_static']:.2f}x"
                         + (f" ({cpu:.2f}x in process CPU time)" if cpu else "")
                         + (f"; / static padded: {r['continuous_vs_static_padded']:.2f}x"
                            if "continuous_vs_static_padded" in r else ""))
        if {"sambay", "dense"} <= set(models):
            s, d = models["sambay"], models["dense"]
            lines.append(f"{'':>10} sambay / dense: continuous {s['continuous']['tokens_per_s'] / d['continuous']['tokens_per_s']:.2f}x, "
                         f"static {s['static']['tokens_per_s'] / d['static']['tokens_per_s']:.2f}x")
    return "\n".join(lines)


def plot(section: dict[str, Any], folder: str, title: str = "") -> str | None:
    """workload.png: tokens/s by workload, one colour per model, the static policies hatched beside
    continuous (static padded cross-hatched, where measured)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(section)
    kinds = sorted({k for m in section.values() for k in m})
    colours = {"dense": "tab:blue", "sambay": "tab:orange"}
    fig, ax = plt.subplots(figsize=(7, 4))
    policies = [p for p in POLICIES if any(p in m for ms in section.values() for m in ms.values())]
    hatches = {"static_padded": "xx", "static": "//", "continuous": None}
    width = 0.8 / (len(policies) * len(kinds))
    for i, kind in enumerate(kinds):
        for j, policy in enumerate(policies):
            k = i * len(policies) + j
            xs = [w + (k - len(kinds) * len(policies) / 2 + 0.5) * width for w in range(len(workloads))]
            ys = [section[w][kind][policy]["tokens_per_s"] if policy in section[w].get(kind, {}) else 0
                  for w in workloads]
            ax.bar(xs, ys, width, color=colours.get(kind), hatch=hatches[policy], edgecolor="black",
                   label=f"{kind} {policy.replace('_', ' ')}")
    ax.set_xticks(range(len(workloads)), workloads)
    ax.set(ylabel="tokens / s", title=title or "end-to-end throughput by workload")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = f"{folder}/workload.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
