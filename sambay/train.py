"""Training SambaY (and the dense Phi-4-mini baseline) on the synthetic arithmetic curriculum.

The model is the package's own (``SambaYForCausalLM`` / ``Phi4MiniForCausalLM``), trained
through its plain layers: autograd runs through the Mamba scan, differential attention and
the GMU. On CUDA :mod:`layers.backends` picks mamba-ssm / causal-conv1d and SDPA, whose
backward passes are used (the Triton decode kernel, which has none, only runs for one-token
queries, never in a training forward).

One step::

    batch    = make_batch(step)                  # fresh problems, a pure function of (seed, step)
    loss     = cross-entropy on the completion   # prompt tokens and right padding are masked
    backward, clip_grad_norm, AdamW (warmup + cosine lr)

* Data: every batch is ``generate_problems(batch_size, seed=data_seed(seed, step), kinds,
  split="train", unique=False)``; repeating a kind in ``kinds`` weights it. Test-split problems
  (hash of the problem, see ``reasoning.curriculum``) are never trained on.
* Padding: rows are right-padded. Mamba, the convolution and attention are causal, so pads
  after a row's last token change nothing before it; their labels are ignored.
* Determinism: init (on CPU, then moved), data order and schedule are functions of the seed.
  On CPU two runs give bit-identical loss curves. On CUDA the mamba-ssm backward adds
  parameter gradients with atomics, so curves agree to rounding, not bit for bit.

    model = SambaYForCausalLM(builtin_sambay_config(tok.vocab_size))
    log = train(model, tok, TrainConfig(), out="run/model")
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import tokenizers
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from layers import backends
from reasoning.answers import extract_boxed
from reasoning.curriculum import KINDS, Problem, generate_problems
from reasoning.tokenizer import Tokenizer

from .config import Phi4MiniConfig, SambaYConfig
from .generate import Engine, Request, SamplingParams

IGNORE = -100  # label of prompt and pad positions
PROBE = (10, 60)  # steps timed by TrainConfig.time_budget (see train)

# ----------------------------------------------------------------------------- model shapes


def builtin_sambay_config(vocab_size: int) -> SambaYConfig:
    """The built-in model: 8 layers (Mamba, SWA, Mamba, SWA, Mamba+memory, full attention, GMU,
    cross-attention), hidden 128, 8 query / 4 KV heads of 16, window 128, d_state 16:
    1.83M parameters, 7.3 MB in fp32."""
    return SambaYConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, sliding_window=128, mamba_d_state=16,
        max_position_embeddings=4096, torch_dtype="float32", bos_token_id=0, eos_token_id=0, pad_token_id=0,
        architectures=["Phi4FlashForCausalLM"],
    )


def builtin_dense_config(vocab_size: int) -> Phi4MiniConfig:
    """The dense twin of :func:`builtin_sambay_config`: same width, depth, heads and vocabulary,
    plain RoPE on 75% of each head (as Phi-4-mini), MLP widened to the same parameter count (1.82M)."""
    return Phi4MiniConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=448, num_hidden_layers=8,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096,
        original_max_position_embeddings=4096, rope_theta=10000.0, partial_rotary_factor=0.75,
        rope_scaling=None, torch_dtype="float32", bos_token_id=0, eos_token_id=0, pad_token_id=0,
        architectures=["Phi3ForCausalLM"],
    )


# ----------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything that determines a training run (with the model config and the tokenizer)."""

    steps: int = 8000
    batch_size: int = 128
    max_len: int = 512  # longer examples are cut (the curriculum's longest is ~360 tokens)
    lr: float = 2e-3
    min_lr: float = 1e-4  # the cosine ends here
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    kinds: tuple[str, ...] = ("add", "sub", "mul", "mul", "word", "word")  # cycled per batch: weights
    dtype: str = "auto"  # "bf16" (autocast, CUDA only), "fp32"; auto: bf16 on CUDA, fp32 on CPU
    log_every: int = 10
    eval_every: int = 1000  # 0: no periodic evaluation
    eval_problems: int = 100  # held-out sample for the periodic evaluation
    eval_max_new_tokens: int = 320  # the longest curriculum completion is ~275 tokens
    ckpt_every: int = 1000  # 0: only at the end
    workers: int = 0  # processes building batches ahead (0: in the training loop)
    time_budget: float = 0.0  # seconds for the training loop; > 0: shorten the run to fit (see train)
    progress: bool = True

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        self.betas = tuple(self.betas)
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"unknown problem kind {k!r}; expected one of {KINDS}")
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"dtype must be 'auto', 'bf16' or 'fp32', got {self.dtype!r}")
        if self.steps < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError("steps and batch_size must be >= 1, warmup_steps >= 0")
        if self.time_budget > 0 and self.warmup_steps < PROBE[1]:
            raise ValueError(f"time_budget measures steps {PROBE[0]}..{PROBE[1]} inside the warmup, whose learning "
                             f"rates do not depend on the run's length: it needs warmup_steps >= {PROBE[1]}")


def lr_at(step: int, cfg: TrainConfig, total_steps: int | None = None) -> float:
    """Learning rate of ``step`` (0-based): linear warmup to ``lr`` over ``warmup_steps``, then a
    cosine from ``lr`` down to ``min_lr`` at the last step."""
    total = cfg.steps if total_steps is None else total_steps
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - 1 - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: matrices decay; norms, biases, ``A_log``, ``D`` and the lambdas do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name.endswith("A_log") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ----------------------------------------------------------------------------- data


def data_seed(seed: int, step: int) -> int:
    """The ``generate_problems`` seed of batch ``step``."""
    return seed * 1_000_003 + step


def collate(examples: Sequence[tuple[list[int], int]], max_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` and ``labels`` (B, T): row b predicts its tokens 1.. from 0..;
    labels are IGNORE on the prompt (before the first completion token) and on padding."""
    rows = [ids[:max_len + 1] for ids, _ in examples]
    T = max(len(r) for r in rows) - 1
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for b, (row, (_, n_prompt)) in enumerate(zip(rows, examples)):
        n = len(row) - 1
        input_ids[b, :n] = torch.tensor(row[:-1])
        labels[b, n_prompt - 1:n] = torch.tensor(row[n_prompt:])
    return input_ids, labels


def make_batch(step: int, cfg: TrainConfig, encoder: tokenizers.Tokenizer, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of the run: a pure function of (cfg.seed, step, cfg.batch_size, cfg.kinds)."""
    problems = generate_problems(cfg.batch_size, seed=data_seed(cfg.seed, step), kinds=cfg.kinds,
                                 split="train", unique=False)
    texts = [t for p in problems for t in (p.chat_text(), p.prompt())]
    enc = encoder.encode_batch(texts, add_special_tokens=False)
    examples = [(enc[2 * i].ids, len(enc[2 * i + 1].ids)) for i in range(len(problems))]
    return collate(examples, cfg.max_len, pad_id)


_worker: dict[str, Any] = {}


def _worker_init(tokenizer_json: str, cfg: TrainConfig, pad_id: int) -> None:
    torch.set_num_threads(1)
    _worker.update(encoder=tokenizers.Tokenizer.from_str(tokenizer_json), cfg=cfg, pad_id=pad_id)


def _worker_batch(step: int) -> tuple[bytes, bytes, tuple[int, int]]:
    x, y = make_batch(step, _worker["cfg"], _worker["encoder"], _worker["pad_id"])
    return x.numpy().tobytes(), y.numpy().tobytes(), tuple(x.shape)


def batches(cfg: TrainConfig, tokenizer: Tokenizer, start: int = 0, prefetch: int = 16
            ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``make_batch(start), make_batch(start + 1), ...`` without end; with ``cfg.workers`` > 0,
    built ahead by that many processes (same batches, in the same order)."""
    encoder = tokenizers.Tokenizer.from_str(_raw(tokenizer).to_str())
    if cfg.workers <= 0:
        step = start
        while True:
            yield make_batch(step, cfg, encoder, tokenizer.pad_token_id)
            step += 1
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may hold CUDA
    with ctx.Pool(cfg.workers, _worker_init, (encoder.to_str(), cfg, tokenizer.pad_token_id)) as pool:
        pending = deque(pool.apply_async(_worker_batch, (s,)) for s in range(start, start + prefetch))
        step = start + prefetch
        while True:
            x, y, shape = pending.popleft().get()
            pending.append(pool.apply_async(_worker_batch, (step,)))
            step += 1
            yield (torch.frombuffer(bytearray(x), dtype=torch.long).view(shape),
                   torch.frombuffer(bytearray(y), dtype=torch.long).view(shape))


def _raw(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    backend = getattr(tokenizer, "_backend", None)
    raw = getattr(backend, "tokenizer", None)
    if not isinstance(raw, tokenizers.Tokenizer):
        raise TypeError("training needs a tokenizer with a tokenizer.json ('hf' backend), "
                        "e.g. reasoning.small_tokenizer.build_small_tokenizer()")
    return raw


# ----------------------------------------------------------------------------- loss, evaluation, checkpoints


def completion_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the completion tokens (labels != IGNORE)."""
    logits = model(input_ids).logits  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, input_ids: torch.Tensor, labels: torch.Tensor,
               lr: float, grad_clip: float, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step at learning rate ``lr``; returns the loss and the gradient norm before
    clipping, as device tensors (reading them would wait for the GPU)."""
    for g in opt.param_groups:
        g["lr"] = lr
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = completion_loss(model, input_ids, labels)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach(), norm.detach()


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (fused on CUDA)."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=lr_at(0, cfg), betas=cfg.betas, eps=1e-8,
                             fused=model.device.type == "cuda")


@torch.no_grad()
def evaluate(model: nn.Module, tokenizer: Tokenizer, problems: Sequence[Problem], *, max_new_tokens: int = 320,
             batch_size: int = 256, keep_failures: int = 20) -> dict[str, Any]:
    """Greedy exact match: the ``\\boxed{}`` of the generation equals the problem's answer.

    Generation goes through :class:`~sambay.generate.Engine` (temperature 0, stopping at
    ``<|end|>`` / eos), prompts rendered with the tokenizer's chat template. Also counts
    ``trace_exact``: the whole completion equals the curriculum's worked solution.
    """
    was_training = model.training
    engine = Engine(model, max_batch_size=max(1, min(batch_size, len(problems))))
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    stop = sorted(tokenizer.stop_token_ids)
    correct, trace_exact, per_kind, failures = 0, 0, {}, []
    t0 = time.perf_counter()
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        requests = [Request(tokenizer.encode(tokenizer.chat_prompt(p.question)), params, stop_token_ids=stop)
                    for p in chunk]
        for p, g in zip(chunk, engine.generate(requests)):
            text = tokenizer.decode(g.tokens, skip_special=True)
            ok = extract_boxed(text) == p.answer
            correct += ok
            trace_exact += text == p.completion
            right, n = per_kind.get(p.kind, (0, 0))
            per_kind[p.kind] = (right + ok, n + 1)
            if not ok and len(failures) < keep_failures:
                failures.append({"question": p.question, "answer": p.answer, "output": text})
    model.train(was_training)
    n = max(1, len(problems))
    return {"n": len(problems), "accuracy": correct / n, "trace_exact": trace_exact / n,
            "per_kind": {k: right / cnt for k, (right, cnt) in sorted(per_kind.items())},
            "seconds": round(time.perf_counter() - t0, 2), "failures": failures}


def generation_config(tokenizer: Tokenizer, max_new_tokens: int = 512) -> dict[str, Any]:
    """``generation_config.json``: greedy decoding, stopping at ``<|end|>`` or eos."""
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": sorted(tokenizer.stop_token_ids),
            "pad_token_id": tokenizer.pad_token_id, "do_sample": False, "temperature": 0.0,
            "max_new_tokens": max_new_tokens}


def save_checkpoint(model: nn.Module, tokenizer: Tokenizer, folder: str | os.PathLike,
                    max_new_tokens: int = 512) -> None:
    """The official layout (config.json + model.safetensors), the tokenizer files and a greedy
    ``generation_config.json``: a folder ``load_model`` and ``load_tokenizer`` read."""
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save(folder)
    write_json(folder / "generation_config.json", generation_config(tokenizer, max_new_tokens))


def write_json(path: Path, obj: Any) -> None:
    """Write via a temporary file, so a run killed mid-write leaves the previous version."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the loop


def _environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "attention_backend": backends.attention_backend(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["mamba_backend"] = backends.mamba_backend(device)
    except ValueError as e:
        env["mamba_backend"] = f"error: {e}"
    return env


def train(
    model: nn.Module,
    tokenizer: Tokenizer,
    cfg: TrainConfig,
    out: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    eval_set: Sequence[Problem] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (already on its device, initialized) in place; returns the log.

    ``out``: checkpoint folder, written every ``ckpt_every`` steps and at the end. ``log_path``:
    the JSON log (config, per-step loss / grad norm / lr, evaluations), rewritten at every
    evaluation and checkpoint. ``eval_set``: held-out problems for the periodic evaluation
    (default: ``cfg.eval_problems`` test-split problems).

    ``cfg.time_budget`` > 0 guards a run against a slow machine: the step time is measured
    over steps 10..60 (inside the warmup, whose learning rates do not depend on the run's
    length) and, if all the steps would not fit in the budget, the run is shortened to the
    steps that do, with its cosine fitted to the new length. Such a run is the same as one
    started with ``steps`` = the new length (the log says ``steps_run``).
    """
    device = model.device
    precision = cfg.dtype if cfg.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    if precision == "bf16" and device.type != "cuda":
        raise ValueError("dtype 'bf16' (autocast) is for CUDA; use 'fp32' on CPU")
    out = Path(out) if out is not None else None
    log_path = Path(log_path) if log_path is not None else None
    if eval_set is None and cfg.eval_every > 0:
        eval_set = generate_problems(cfg.eval_problems, seed=cfg.seed + 10_000, kinds=list(dict.fromkeys(cfg.kinds)),
                                     split="test")
    env = _environment(device)
    if device.type == "cuda" and env.get("mamba_backend") != "cuda" and isinstance(model.config, SambaYConfig):
        tqdm.write("WARNING: training on CUDA without mamba-ssm/causal-conv1d: the Mamba scan runs as a "
                   "Python loop (slow). Install the kernels: pip install 'sambay[gpu]'.", file=sys.stderr)

    opt = make_optimizer(model, cfg)
    log: dict[str, Any] = {
        "train_config": asdict(cfg), "model_config": model.config.to_dict(), "environment": env,
        "parameters": sum(p.numel() for p in model.parameters()), "precision": precision, "command": sys.argv,
        "steps_run": cfg.steps, "loss": [], "grad_norm": [], "lr": [], "tokens": 0, "evals": [],
    }

    def save_log() -> None:
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            write_json(log_path, log)

    def run_eval(step: int) -> None:
        nonlocal evals_on
        try:
            result = evaluate(model, tokenizer, eval_set, max_new_tokens=cfg.eval_max_new_tokens)
        except Exception as e:  # an evaluation bug must not cost the training run
            model.train()
            tqdm.write(f"WARNING: evaluation failed at step {step}, evaluations are off for this run:\n"
                       f"{traceback.format_exc()}", file=sys.stderr)
            log["evals"].append({"step": step, "error": repr(e)})
            evals_on = False
            return
        result.pop("failures")
        log["evals"].append({"step": step, **result})
        kinds = " ".join(f"{k} {v:.0%}" for k, v in result["per_kind"].items())
        tqdm.write(f"step {step}: held-out greedy accuracy {result['accuracy']:.1%} ({kinds}), "
                   f"trace exact {result['trace_exact']:.1%}")

    total = cfg.steps
    evals_on = cfg.eval_every > 0
    model.train()
    pending_loss: list[torch.Tensor] = []
    pending_norm: list[torch.Tensor] = []
    tokens_seen = 0
    bar = tqdm(total=total, disable=not cfg.progress, dynamic_ncols=True, mininterval=1.0, desc="train")
    data = batches(cfg, tokenizer)
    t_start = time.perf_counter()
    t_probe = None
    eval_seconds = 0.0
    try:
        step = 0
        while step < total:
            input_ids, labels = next(data)
            tokens_seen += int((input_ids != tokenizer.pad_token_id).sum())  # real tokens, pads not counted
            input_ids = input_ids.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            lr = lr_at(step, cfg, total)
            loss, norm = train_step(model, opt, input_ids, labels, lr, cfg.grad_clip, bf16=precision == "bf16")
            pending_loss.append(loss)
            pending_norm.append(norm)
            log["lr"].append(lr)
            step += 1
            bar.update(1)

            if step % cfg.log_every == 0 or step == total:
                losses = torch.stack(pending_loss).tolist()
                log["loss"] += losses
                log["grad_norm"] += torch.stack(pending_norm).float().tolist()
                pending_loss.clear()
                pending_norm.clear()
                if not all(math.isfinite(x) for x in losses):
                    save_log()
                    raise FloatingPointError(f"loss is not finite at step {step}: {losses}")
                elapsed = time.perf_counter() - t_start - eval_seconds
                bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_seen / elapsed:,.0f}",
                                refresh=False)

            if cfg.time_budget > 0 and step == PROBE[0]:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t_probe = time.perf_counter()
            if cfg.time_budget > 0 and step == PROBE[1] and t_probe is not None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                per_step = (time.perf_counter() - t_probe) / (PROBE[1] - PROBE[0])
                left = cfg.time_budget - (time.perf_counter() - t_start)
                fits = step + int(left / per_step)
                log["seconds_per_step_probe"] = per_step
                if fits < total:
                    new_total = max(step + 1, fits // 50 * 50)
                    tqdm.write(f"WARNING: {per_step * 1e3:.0f} ms/step: {total} steps do not fit in the time "
                               f"budget of {cfg.time_budget:.0f} s; running {new_total} steps (to reproduce this "
                               f"run: --steps {new_total} --time-budget 0)", file=sys.stderr)
                    log["steps_reduced_from"] = total
                    total = new_total
                    log["steps_run"] = total
                    bar.total = total
                    bar.refresh()

            if evals_on and (step % cfg.eval_every == 0 or step == total):
                t0 = time.perf_counter()
                run_eval(step)
                eval_seconds += time.perf_counter() - t0
                save_log()
            if out is not None and ((cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0) or step == total):
                save_checkpoint(model, tokenizer, out)
                save_log()
    finally:
        data.close()
        bar.close()
    log["tokens"] = tokens_seen
    log["train_seconds"] = round(time.perf_counter() - t_start, 1)
    log["eval_seconds"] = round(eval_seconds, 1)
    save_log()
    return log
