"""Latency and throughput of SambaY against the dense Phi-4-mini, measured side by side in one run.

Models are built with random weights in the official shapes (no checkpoint needed) or in tiny
shapes (CPU smoke runs). What is measured, per model:

* prefill: seconds to prefill one prompt of each length (batch 1, real prefill);
* decode latency: ms per token at batch 1 at each context length (the engine's decode step:
  inputs, CUDA-graph replay, sampling; median over ``decode_steps`` steps);
* decode throughput: for a batch of B sequences with a ``prompt``-token prompt and a
  ``generate``-token budget, the step time is measured at several context lengths spread over
  [prompt, prompt + generate] and integrated (step time is linear in context), giving
  tokens/s for the whole generation. The running set is placed at each context length without
  computing it (``Engine.place`` / ``Engine.jump``: decode reads the same bytes whatever they
  hold), so large batches need no prefill of B x context tokens. Batches grow until the cache no longer fits in memory, then a
  bisection finds the largest batch that fits;
* bytes: cache bytes per sequence, and the bytes a decode step must move (weights, the cache
  it reads, recurrent state read and written), which over the device's copy bandwidth gives the
  floor. The bandwidth is measured in the same run (:func:`measure_bandwidth`) and recorded in
  the results: a figure from another device would make every ratio to the floor meaningless.
"""

from __future__ import annotations

import contextlib
import gc
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

import layers.backends as backends
from layers.linear import quantize_model

from .cache import PagedCache, SambaYCache
from .config import Phi4MiniConfig, SambaYConfig
from .engine.sequence import Sequence
from .generate import Engine, Request, SamplingParams
from .model import SambaYForCausalLM
from .phi4mini import Phi4MiniForCausalLM

MODELS = ("dense", "sambay")  # the order of the H100 run in examples/results/h100


@dataclass
class BenchSettings:
    shape: str = "official"  # or "tiny"
    device: str = "cuda"
    dtype: str = "bfloat16"
    prompt_lengths: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768])
    contexts: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192, 16384, 32768, 65536])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 8, 16, 32, 64, 128, 256, 384, 512])
    prompt: int = 2048
    generate: int = 32768
    throughput_points: int = 5
    decode_steps: int = 32
    compile: bool = True  # torch.compile the batch-1 decode step (both models); throughput runs use graphs only
    check_prompt: int = 512  # fast-vs-reference check: prompt length, then 64 decode steps
    check: bool = True  # run the fast-vs-reference check (a capacity sweep may skip it)
    models: list[str] = field(default_factory=lambda: list(MODELS))
    backends: backends.Backends = backends.DEFAULT  # the models' kernels (the environment's choice by default)
    quantize: str | None = None  # "fp8": linear weights in float8 e4m3 with per-row scales
    kv_cache_dtype: str | None = None  # "fp8": the paged K/V in float8 e4m3 with per-(token, head) scales

    @classmethod
    def tiny(cls, device: str = "cpu") -> "BenchSettings":
        return cls(shape="tiny", device=device, dtype="float32", prompt_lengths=[32, 64, 128],
                   contexts=[32, 64, 128], batch_sizes=[1, 4, 16], prompt=32, generate=96,
                   throughput_points=3, decode_steps=8, compile=False, check_prompt=48)


def build(kind: str, shape: str, device: str, dtype: torch.dtype, quantize: str | None = None) -> nn.Module:
    """A randomly initialized model of ``kind`` ("sambay" / "dense") and ``shape``, its linear
    weights quantized (``quantize="fp8"``, :func:`layers.linear.quantize_model`) after the cast."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}; choose from {MODELS}")
    if shape not in ("official", "tiny"):
        raise ValueError(f"unknown shape {shape!r}; choose 'official' or 'tiny'")
    cls, cfg_cls = (SambaYForCausalLM, SambaYConfig) if kind == "sambay" else (Phi4MiniForCausalLM, Phi4MiniConfig)
    config = cfg_cls.official() if shape == "official" else cfg_cls.tiny()
    torch.manual_seed(0)
    with torch.device(device):
        model = cls(config)
    return quantize_model(model.to(dtype).eval(), quantize)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls (CUDA events on GPU)."""
    out = []
    for _ in range(repeat):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            out.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return out


def measure_bandwidth(device: torch.device | str, nbytes: int | None = None, repeat: int = 10) -> float:
    """The device's copy bandwidth in bytes/s: bytes read + written by a copy of one large buffer
    into another (device to device on a GPU, a memcpy in RAM on a CPU), median of ``repeat`` copies
    after a warm-up. ``nbytes``: 1 GiB on a GPU, 256 MiB on a CPU, far beyond any cache."""
    device = torch.device(device)
    nbytes = nbytes or (2**30 if device.type == "cuda" else 2**28)
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)  # written: every page is mapped
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = statistics.median(timed(lambda: dst.copy_(src), device, repeat))
    del src, dst
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return 2 * nbytes / seconds


def weight_bytes(model: nn.Module, batch: int = 1) -> int:
    """Weight bytes one decode step of ``batch`` rows reads: every parameter and fp8 scale once, but
    of an embedding that is not also the lm_head (an fp8 model's head is its own copy) only the
    ``batch`` rows looked up."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(b.numel() * b.element_size() for name, b in model.named_buffers() if name.endswith("weight_scale"))
    embed = model.model.embed_tokens.weight
    if model.lm_head.weight is not embed:
        total += (batch - embed.shape[0]) * embed.shape[1] * embed.element_size()
    return total


def step_bytes(model: nn.Module, cache: PagedCache, context: int, batch: int = 1) -> int:
    """Bytes one decode step over ``batch`` rows must move at ``context`` tokens: every weight
    once, the K/V each attention layer reads, recurrent state read and written."""
    weights = weight_bytes(model, batch)
    if isinstance(cache, SambaYCache):
        readers = sum(1 for k in model.config.layer_types if k in ("full_attention", "cross_attention"))
        return weights + batch * (context * cache.kv_bytes_per_token() * readers + cache.ring_bytes_per_sequence()
                                  + 2 * cache.recurrent_bytes_per_sequence())
    return weights + batch * context * cache.kv_bytes_per_token()


def engine_for(model: nn.Module, batch: int, max_tokens: int, compile: bool = False, **options: Any) -> Engine:
    """An engine with exactly the blocks ``batch`` requests of ``max_tokens`` tokens need, and one
    decode graph, of ``batch`` rows (one compile when compiling)."""
    block_size = 16
    blocks = 1 + batch * -(-max_tokens // block_size)
    return Engine(model, max_batch_size=batch, num_blocks=blocks, block_size=block_size, compile=compile,
                  graph_sizes=[batch], **options)


def decode_step(engine: Engine, seqs: list[Sequence]) -> Callable[[], torch.Tensor]:
    """The engine's decode step of the placed running set (no scheduling, no token appended)."""
    return lambda: engine.runner.decode(seqs)


def measure_prefill_and_latency(model: nn.Module, s: BenchSettings, device: torch.device,
                                log: Callable[[str], None] = print, *, bandwidth: float) -> list[dict]:
    """Batch 1: prefill each length (timed), then time decode steps at that context; the floor is
    the step's bytes over ``bandwidth`` (bytes/s)."""
    lengths = sorted(set(s.prompt_lengths) | set(s.contexts))
    engine = engine_for(model, 1, max(lengths) + 2, compile=s.compile, prefill_chunk=max(lengths),
                        kv_cache_dtype=s.kv_cache_dtype)
    vocab = model.config.vocab_size
    rows = []
    for n in [min(lengths)] + lengths:  # the first run warms up
        prompt = torch.randint(0, vocab, (n,)).tolist()

        def prefill() -> None:
            engine.generate([Request(prompt, SamplingParams(temperature=0.0, max_new_tokens=1))])

        seconds = min(timed(prefill, device, 2))  # the first run of a new length pays kernel selection
        row: dict[str, Any] = {"length": n}
        if n in s.prompt_lengths:
            row["prefill_s"] = seconds
        if n in s.contexts:
            seqs = engine.place([n])
            step = decode_step(engine, seqs)
            step()  # warm
            row["decode_ms"] = 1e3 * statistics.median(timed(step, device, s.decode_steps))
            row["floor_ms"] = 1e3 * step_bytes(model, engine.cache, n) / bandwidth
            engine.abort(seqs[0].request_id)
            engine.step()
        rows.append(row)
        log(f"    {row}")
    return rows[1:]


def _out_of_memory(e: BaseException | None) -> bool:
    """``e`` is, or was raised from, a CUDA out-of-memory error."""
    while e is not None:
        if isinstance(e, torch.OutOfMemoryError):
            return True
        e = e.__cause__ or e.__context__
    return False


def throughput_at(model: nn.Module, s: BenchSettings, device: torch.device, batch: int,
                  compile: bool = False, *, bandwidth: float) -> dict | None:
    """Decode throughput of ``batch`` rows over the prompt + generate budget, and the bytes model's
    (bytes over ``bandwidth``, bytes/s); None when the cache or a step does not fit in memory."""
    budget = s.prompt + s.generate
    points = [s.prompt + round(i * s.generate / (s.throughput_points - 1)) for i in range(s.throughput_points)]
    points[-1] = budget - s.decode_steps - 2
    engine = None
    try:
        engine = engine_for(model, batch, budget, compile=compile, kv_cache_dtype=s.kv_cache_dtype)
        seqs = engine.place([points[0]] * batch)
        step = decode_step(engine, seqs)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step_s, floor_s = [], []
        for ctx in points:
            engine.jump(seqs, ctx)
            step()
            step_s.append(statistics.median(timed(step, device, s.decode_steps)))
            floor_s.append(step_bytes(model, engine.cache, ctx, batch) / bandwidth)
        cache_bytes = engine.cache.nbytes_per_sequence(budget)
    except Exception as e:  # noqa: BLE001 - torch.compile wraps an out-of-memory in its own error
        if not _out_of_memory(e):
            raise
        return None
    finally:
        del engine
    # Trapezoid over the context points: seconds to generate `generate` tokens per row.
    total = sum((step_s[i] + step_s[i + 1]) / 2 * (points[i + 1] - points[i]) for i in range(len(points) - 1))
    floor = sum((floor_s[i] + floor_s[i + 1]) / 2 * (points[i + 1] - points[i]) for i in range(len(points) - 1))
    span = points[-1] - points[0]
    return {"batch": batch, "contexts": points, "step_ms": [1e3 * t for t in step_s],
            "tokens_per_s": batch * span / total, "floor_tokens_per_s": batch * span / floor,
            "cache_bytes_per_seq": cache_bytes,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None}


def measure_throughput(model: nn.Module, s: BenchSettings, device: torch.device,
                       log: Callable[[str], None] = print, *, bandwidth: float) -> list[dict]:
    """Decode throughput for growing batch sizes with CUDA graphs, up to the first that does not
    fit; then a bisection between the last size that fit and that one finds the largest batch
    that fits. With ``s.compile`` the largest batch is measured again with the step compiled as
    well (one compile per batch size is too slow for the whole sweep)."""
    def one(batch: int, compile: bool = False) -> dict | None:
        row = throughput_at(model, s, device, batch, compile=compile, bandwidth=bandwidth)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if row is not None:
            log(f"    batch {batch}{', compiled' if compile else ''}: {row['tokens_per_s']:.0f} tok/s "
                f"(bytes model {row['floor_tokens_per_s']:.0f})")
        return row

    rows: list[dict] = []
    too_big = None
    for batch in s.batch_sizes:
        row = one(batch)
        if row is None:
            too_big = batch
            break
        rows.append(row)
    if rows and too_big is not None:
        fits = rows[-1]["batch"]
        while too_big - fits > max(1, fits // 64):  # to within 1/64 of the batch
            mid = (fits + too_big) // 2
            row = one(mid)
            if row is None:
                too_big = mid
            else:
                fits = mid
                rows.append(row)
    if s.compile and rows:
        # Compiling needs some memory of its own: at the very largest batch it may not fit, then
        # a batch of 7/8 of it is compiled instead.
        largest = rows[-1]["batch"]
        for batch in dict.fromkeys((largest, max(1, largest * 7 // 8))):
            row = one(batch, compile=True)
            if row is not None:
                row["compiled"] = True
                rows.append(row)
                break
    return rows


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm()) if torch.isfinite(a).all() else float("inf")


def _teacher_forced(model: nn.Module, ids: torch.Tensor, n: int, engine: Engine | None,
                    kv_cache_dtype: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of an ``n``-token prefill (all positions) and of each following token decoded one at
    a time: eagerly through ``model`` (engine None; its cache in ``kv_cache_dtype``) or through the
    engine's decode step (the prefill's logits from an eager prefill into a cache of the engine's
    K/V dtype)."""
    if engine is not None:
        kv_cache_dtype = engine.kv_cache_dtype
    cache = model.allocate_cache(1, ids.shape[1], kv_cache_dtype=kv_cache_dtype)
    prefill = model(ids[:, :n], cache=cache).logits.float()
    if engine is None:
        steps = [model(ids[:, t:t + 1], cache=cache).logits[:, -1] for t in range(n, ids.shape[1])]
    else:  # the same tokens through the engine: its prefill, then its decode steps, fed the given tokens
        tokens = ids[0].tolist()
        engine.add(Request(tokens[:n], SamplingParams(temperature=0.0, max_new_tokens=ids.shape[1] - n + 1)))
        engine.step()  # the prefill (one chunk: prefill_chunk >= n)
        seq = engine.scheduler.running[0]
        steps = []
        for t in range(n, ids.shape[1]):
            seq.tokens[-1] = tokens[t]  # teacher forcing: the given token goes in, not the sampled one
            engine.step()
            steps.append(engine.runner.last_logits)
    return prefill, torch.stack([x.float() for x in steps])


def _errors(fast: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
    return {"prefill_rel_err": relative_error(fast[0], ref[0]), "decode_rel_err": relative_error(fast[1], ref[1]),
            "max_step_rel_err": max(relative_error(f, r) for f, r in zip(fast[1], ref[1])),
            "greedy_agreement": float((fast[1].argmax(-1) == ref[1].argmax(-1)).float().mean())}


@torch.no_grad()
def fast_vs_reference(model: nn.Module, s: BenchSettings, steps: int = 64) -> tuple[dict[str, Any], nn.Module]:
    """The fast path (the engine as benchmarked: fast kernels, CUDA graphs, compile; fp8 weights
    and K/V as ``s`` says) against the plain-PyTorch reference: logits of a ``check_prompt``-token
    prefill and of ``steps`` teacher-forced decode steps. ``model`` comes unquantized; returns the
    errors and the model as benchmarked (its weights quantized when ``s.quantize``).

    Entries: the mode's name ("bf16", "fp8 weights", "fp8 kv", "fp8 weights + kv"): fast vs the
    reference with the same numerics (same weights, same K/V dtype: the kernels compute the
    reference's function). On CUDA also "fp32": the same on an fp32 copy of the weights;
    "reference_bf16_vs_fp32": the error bf16 itself brings on these weights (the yardstick); and
    for fp8 modes "vs_unquantized_reference" (in the model's dtype: bf16 on a GPU) and
    "vs_fp32_reference": the fast fp8 path against the unquantized references (what quantizing
    costs, beside that yardstick).
    """
    n = s.check_prompt
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, n + steps), generator=gen).to(model.device)
    cuda = model.device.type == "cuda"
    kv = s.kv_cache_dtype

    def reference(m: nn.Module, kv_cache_dtype: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        with backends.use(attention="ref", mamba="ref", linear="torch"):
            return _teacher_forced(m, ids, n, None, kv_cache_dtype)

    def fast(m: nn.Module, compile: bool) -> tuple[torch.Tensor, torch.Tensor]:
        engine = engine_for(m, 1, ids.shape[1] + 2, compile=compile, keep_logits=True, prefill_chunk=n,
                            kv_cache_dtype=kv)
        return _teacher_forced(m, ids, n, engine)

    out: dict[str, Any] = {"prompt": n, "steps": steps}
    quantized = s.quantize is not None or kv not in (None, "auto")
    ref = reference(model, None)
    ref32 = None
    if cuda and model.dtype != torch.float32:
        import copy

        model32 = copy.deepcopy(model).float()
        ref32 = reference(model32, None)
        out["fp32"] = _errors(fast(model32, False), reference(model32, kv))
        del model32
        torch.cuda.empty_cache()
        out["reference_bf16_vs_fp32"] = {k: v for k, v in _errors(ref, ref32).items() if k.endswith("rel_err")}
    model = quantize_model(model, s.quantize)
    mode = mode_name(model.dtype, s.quantize, kv)
    got = fast(model, s.compile and cuda)
    out[mode] = _errors(got, reference(model, kv) if quantized else ref)
    if quantized:
        out["vs_unquantized_reference"] = _errors(got, ref)
        if ref32 is not None:
            out["vs_fp32_reference"] = _errors(got, ref32)
    return out, model


def mode_name(dtype: torch.dtype, quantize: str | None, kv_cache_dtype: str | None) -> str:
    """"bf16", "fp8 weights", "fp8 kv", "fp8 weights + kv" (or the dtype's name for others)."""
    kv = kv_cache_dtype not in (None, "auto")
    if quantize:
        return f"{quantize} weights + kv" if kv else f"{quantize} weights"
    if kv:
        return f"{kv_cache_dtype} kv"
    return "bf16" if dtype == torch.bfloat16 else str(dtype).removeprefix("torch.")


def environment(device: torch.device, choice: backends.Backends) -> dict[str, Any]:
    env: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                           "attention_backend": backends.attention_backend(device, choice),
                           "mamba_backend": backends.mamba_backend(device, choice),
                           "linear_backend": backends.linear_backend(device, choice)}
    for mod in ("triton", "mamba_ssm", "causal_conv1d", "flash_attn", "transformers"):
        with contextlib.suppress(ImportError):
            env[mod] = __import__(mod).__version__
    return env


def run(s: BenchSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    device = torch.device(s.device)
    dtype = getattr(torch, s.dtype)
    bandwidth = measure_bandwidth(device)
    log(f"copy bandwidth of {device}: {bandwidth / 1e12:.3f} TB/s (read + written, measured now)")
    results: dict[str, Any] = {"settings": asdict(s), "environment": environment(device, s.backends),
                               "copy_bandwidth_bytes_per_s": bandwidth, "models": {}}
    for kind in s.models:
        log(f"[{kind}] building {s.shape} model ({s.dtype}, {device})")
        model = build(kind, s.shape, s.device, dtype)
        model.backends = s.backends
        params = sum(p.numel() for p in model.parameters())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        log(f"[{kind}] fast path vs reference ({mode_name(dtype, s.quantize, s.kv_cache_dtype)})")
        check: dict[str, Any] = {}
        if s.check:
            check, model = fast_vs_reference(model, s)
        else:
            model = quantize_model(model, s.quantize)
        for name, c in check.items():
            if isinstance(c, dict) and "prefill_rel_err" in c:
                log(f"[{kind}] {name}: logits relative error prefill {c['prefill_rel_err']:.2e}, "
                    f"{check['steps']} decode steps {c['decode_rel_err']:.2e}")
        log(f"[{kind}] prefill and batch-1 decode latency")
        latency = measure_prefill_and_latency(model, s, device, log, bandwidth=bandwidth)
        log(f"[{kind}] throughput over batch sizes")
        throughput = measure_throughput(model, s, device, log, bandwidth=bandwidth)
        cache_bytes = model.make_cache(2, 16, 1, device="meta", kv_cache_dtype=s.kv_cache_dtype).nbytes_per_sequence(
            s.prompt + s.generate)
        results["models"][kind] = {"mode": mode_name(dtype, s.quantize, s.kv_cache_dtype), "parameters": params,
                                   "fast_vs_reference": check, "latency": latency,
                                   "throughput": throughput, "cache_bytes_per_seq": cache_bytes}
        # The next model starts from a clean slate: no compiled graphs (and what they hold) left over.
        del model
        torch._dynamo.reset()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def table(results: dict[str, Any]) -> str:
    """A plain-text summary of ``results``."""
    lines = [f"floors: bytes over the copy bandwidth measured in this run, "
             f"{results['copy_bandwidth_bytes_per_s'] / 1e12:.3f} TB/s"]
    models = results["models"]
    for kind, r in models.items():
        lines.append(f"== {kind} ({r.get('mode', '?')}): {r['parameters'] / 1e6:,.1f}M parameters, cache "
                     f"{(r['cache_bytes_per_seq'] or 0) / 2**20:.1f} MiB per sequence at "
                     f"{results['settings']['prompt'] + results['settings']['generate']} tokens")
        lines.append(f"{'length':>8} {'prefill s':>10} {'decode ms':>10} {'floor ms':>9} {'ratio':>6}")
        for row in r["latency"]:
            p = f"{row['prefill_s']:.4f}" if "prefill_s" in row else "-"
            d = f"{row['decode_ms']:.3f}" if "decode_ms" in row else "-"
            f_ = f"{row['floor_ms']:.3f}" if "floor_ms" in row else "-"
            ratio = f"{row['decode_ms'] / row['floor_ms']:.2f}" if "decode_ms" in row else "-"
            lines.append(f"{row['length']:>8} {p:>10} {d:>10} {f_:>9} {ratio:>6}")
        lines.append(f"{'batch':>8} {'tok/s':>10} {'floor tok/s':>12} {'ratio':>6}")
        for row in r["throughput"]:
            batch = f"{row['batch']}{'c' if row.get('compiled') else ''}"
            lines.append(f"{batch:>8} {row['tokens_per_s']:>10.1f} {row['floor_tokens_per_s']:>12.1f} "
                         f"{row['floor_tokens_per_s'] / row['tokens_per_s']:>6.2f}")
        if any(row.get("compiled") for row in r["throughput"]):
            lines.append("   (c: the step compiled as well as graphed)")
    if all(k in models and models[k]["throughput"] for k in MODELS):
        best = {k: max(models[k]["throughput"], key=lambda r: r["tokens_per_s"]) for k in MODELS}
        lines.append(f"best throughput: sambay {best['sambay']['tokens_per_s']:.0f} tok/s (batch "
                     f"{best['sambay']['batch']}), dense {best['dense']['tokens_per_s']:.0f} tok/s (batch "
                     f"{best['dense']['batch']}): ratio {best['sambay']['tokens_per_s'] / best['dense']['tokens_per_s']:.2f}x"
                     f" (bytes model: {best['sambay']['floor_tokens_per_s'] / best['dense']['floor_tokens_per_s']:.2f}x)")
    return "\n".join(lines)


COLORS = {"sambay": "tab:blue", "dense": "tab:orange"}  # one colour per model in every panel


def _plain_ticks(ax: Any) -> None:
    """Log axes with plain tick labels (1, 2, 5, 10, 20, ..., 0.5; no 10^x, no offsets): powers of
    two on x (contexts and batch sizes are), 1-2-5 steps on y."""
    from matplotlib import ticker

    def plain(v: float, _pos: int) -> str:
        import numpy as np

        return f"{v:.0f}" if v >= 10 else np.format_float_positional(v, precision=6, trim="-")

    for axis, locator in ((ax.xaxis, ticker.LogLocator(base=2, numticks=9)),
                          (ax.yaxis, ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))):
        axis.set_major_locator(locator)
        axis.set_major_formatter(ticker.FuncFormatter(plain))
        axis.set_minor_locator(ticker.NullLocator())


def figures(results: dict[str, Any]) -> tuple[Any, Any]:
    """The latency figure (batch-1 decode ms/token with its floor, prefill seconds, against length)
    and the throughput figure (tok/s with the bytes model, against batch size). Log axes, so that
    a floor far below the measurement (a CPU run) stays visible; the legends sit outside the axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env, s = results["environment"], results["settings"]
    bw = results.get("copy_bandwidth_bytes_per_s")
    title = (f"{env['device']}, {s['dtype']}, {s['shape']} shapes"
             + (f"; floors at the measured copy bandwidth, {bw / 1e12:.3g} TB/s" if bw else ""))
    lat, (a, b) = plt.subplots(1, 2, figsize=(11, 4.6))
    for kind, r in results["models"].items():
        c = COLORS.get(kind)
        rows = [x for x in r["latency"] if "decode_ms" in x]
        a.plot([x["length"] for x in rows], [x["decode_ms"] for x in rows], "o-", color=c, label=kind)
        a.plot([x["length"] for x in rows], [x["floor_ms"] for x in rows], ".:", color=c, label=f"{kind} bytes floor")
        rows = [x for x in r["latency"] if "prefill_s" in x]
        b.plot([x["length"] for x in rows], [x["prefill_s"] for x in rows], "s--", color=c, label=f"{kind} prefill")
    a.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel="ms / token", title="batch-1 decode latency")
    b.set(xscale="log", yscale="log", xlabel="prompt (tokens)", ylabel="seconds", title="prefill")
    handles = [h for ax in (a, b) for h in ax.get_legend_handles_labels()[0]]
    lat.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    lat.suptitle(title, fontsize=9)
    thr, ax = plt.subplots(figsize=(7.5, 4.2))
    for kind, r in results["models"].items():
        c = COLORS.get(kind)
        rows = [x for x in r["throughput"] if not x.get("compiled")]
        ax.plot([x["batch"] for x in rows], [x["tokens_per_s"] for x in rows], "o-", color=c, label=kind)
        ax.plot([x["batch"] for x in rows], [x["floor_tokens_per_s"] for x in rows], ".:", color=c,
                label=f"{kind} bytes model")
        compiled = [x for x in r["throughput"] if x.get("compiled")]
        if compiled:
            ax.plot([x["batch"] for x in compiled], [x["tokens_per_s"] for x in compiled], "*", ms=12, color=c,
                    label=f"{kind} compiled")
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="tokens / s",
           title=f"decode throughput, {s['prompt']} prompt + {s['generate']} generated")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    thr.suptitle(title, fontsize=8)
    for axis in (a, b, ax):
        _plain_ticks(axis)
        axis.grid(alpha=0.3)
    lat.tight_layout(rect=(0, 0.07, 1, 1))
    thr.tight_layout()
    return lat, thr


def plot(results: dict[str, Any], folder: str) -> list[str]:
    """Write :func:`figures` to ``folder``/latency.png and ``folder``/throughput.png; their paths."""
    import matplotlib.pyplot as plt

    paths = [f"{folder}/latency.png", f"{folder}/throughput.png"]
    for fig, path in zip(figures(results), paths):
        fig.savefig(path, dpi=120)
    plt.close("all")
    return paths
