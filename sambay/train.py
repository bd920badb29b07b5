"""A generic training loop for the package's models over batches of token ids.

The model is the package's own (``SambaYForCausalLM`` / ``Phi4MiniForCausalLM``), trained
through its plain layers: autograd runs through the Mamba scan, differential attention and
the GMU. On CUDA the model's backends (:mod:`layers.backends`) pick mamba-ssm / causal-conv1d
and SDPA, whose backward passes are used (the Triton decode kernel, which has none, only runs
for one-token queries, never in a training forward).

One step::

    input_ids, labels = next(batches)            # from the caller: (B, T) each, see collate
    loss     = cross-entropy on the completion   # labels IGNORE on prompt tokens and padding
    backward, clip_grad_norm, AdamW (warmup + cosine lr)

What the batches hold, how checkpoints are written and what the periodic evaluation measures
are the caller's: :mod:`reasoning.builtin_training` trains the built-in arithmetic model with
this loop. Padding: rows are right-padded. Mamba, the convolution and attention are causal, so
pads after a row's last token change nothing before it; their labels are ignored.

Determinism: given the same model init and batches, the schedule is a function of the config.
On CPU two runs give bit-identical loss curves. On CUDA the mamba-ssm backward adds parameter
gradients with atomics, so curves agree to rounding, not bit for bit.

    log = train(model, TrainConfig(steps=100), batches, pad_token_id=0, save=lambda: ...)
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from layers import backends

from .config import SambaYConfig

IGNORE = -100  # label of prompt and pad positions
PROBE = (10, 60)  # steps timed by TrainConfig.time_budget (see train)

Batch = tuple[torch.Tensor, torch.Tensor]  # input_ids, labels: (B, T) each

# ----------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """The optimization of a run: steps, schedule, optimizer, precision, logging, checkpoints and
    the time guard (what the batches hold is the batch source's)."""

    steps: int = 8000
    lr: float = 2e-3
    min_lr: float = 1e-4  # the cosine ends here
    warmup_steps: int = 200
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    dtype: str = "auto"  # "bf16" (autocast, CUDA only), "fp32"; auto: bf16 on CUDA, fp32 on CPU
    log_every: int = 10
    eval_every: int = 1000  # 0: no periodic evaluation
    ckpt_every: int = 1000  # 0: only at the end
    time_budget: float = 0.0  # seconds for the training loop; > 0: shorten the run to fit (see train)
    progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.dtype not in ("auto", "bf16", "fp32"):
            raise ValueError(f"dtype must be 'auto', 'bf16' or 'fp32', got {self.dtype!r}")
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError("steps must be >= 1, warmup_steps >= 0")
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


# ----------------------------------------------------------------------------- batches and loss


def collate(examples: Sequence[tuple[list[int], int]], max_len: int, pad_id: int) -> Batch:
    """Right-padded ``input_ids`` and ``labels`` (B, T) of ``(token ids, prompt length)`` examples:
    row b predicts its tokens 1.. from 0..; labels are IGNORE on the prompt (before the first
    completion token) and on padding. Examples longer than ``max_len`` + 1 tokens are cut."""
    rows = [ids[:max_len + 1] for ids, _ in examples]
    T = max(len(r) for r in rows) - 1
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for b, (row, (_, n_prompt)) in enumerate(zip(rows, examples)):
        n = len(row) - 1
        input_ids[b, :n] = torch.tensor(row[:-1])
        labels[b, n_prompt - 1:n] = torch.tensor(row[n_prompt:])
    return input_ids, labels


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


def write_json(path: Path, obj: Any) -> None:
    """Write via a temporary file, so a run killed mid-write leaves the previous version."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the loop


def _environment(model: nn.Module) -> dict[str, Any]:
    device = model.device
    choice = model.backends
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "attention_backend": backends.attention_backend(device, choice)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    try:
        env["mamba_backend"] = backends.mamba_backend(device, choice)
    except ValueError as e:
        env["mamba_backend"] = f"error: {e}"
    return env


def train(
    model: nn.Module,
    cfg: TrainConfig,
    batches: Iterator[Batch],
    *,
    pad_token_id: int,
    save: Callable[[], None] | None = None,
    heldout: Callable[[int], dict[str, Any]] | None = None,
    log_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train ``model`` (already on its device, initialized) in place on ``batches``; returns the log.

    ``batches`` yields ``(input_ids, labels)`` (CPU tensors, see :func:`collate`), one per step;
    ``pad_token_id`` marks the pads not counted as tokens seen. ``save()`` writes a checkpoint,
    every ``ckpt_every`` steps and at the end. ``heldout(step)`` returns the metrics of a periodic
    evaluation (every ``eval_every`` steps and at the end; an exception turns evaluations off
    for the run, with a warning, and never costs the training). ``log_path``: the JSON log
    (config, per-step loss / grad norm / lr, evaluations), rewritten at every evaluation and
    checkpoint.

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
    log_path = Path(log_path) if log_path is not None else None
    env = _environment(model)
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
            result = heldout(step)
        except Exception as e:  # an evaluation bug must not cost the training run
            model.train()
            tqdm.write(f"WARNING: evaluation failed at step {step}, evaluations are off for this run:\n"
                       f"{traceback.format_exc()}", file=sys.stderr)
            log["evals"].append({"step": step, "error": repr(e)})
            evals_on = False
            return
        log["evals"].append({"step": step, **result})

    total = cfg.steps
    evals_on = cfg.eval_every > 0 and heldout is not None
    model.train()
    pending_loss: list[torch.Tensor] = []
    pending_norm: list[torch.Tensor] = []
    tokens_seen = 0
    bar = tqdm(total=total, disable=not cfg.progress, dynamic_ncols=True, mininterval=1.0, desc="train")
    t_start = time.perf_counter()
    t_probe = None
    eval_seconds = 0.0
    try:
        step = 0
        while step < total:
            input_ids, labels = next(batches)
            tokens_seen += int((input_ids != pad_token_id).sum())  # real tokens, pads not counted
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
            if save is not None and ((cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0) or step == total):
                save()
                save_log()
    finally:
        bar.close()
    log["tokens"] = tokens_seen
    log["train_seconds"] = round(time.perf_counter() - t_start, 1)
    log["eval_seconds"] = round(eval_seconds, 1)
    save_log()
    return log
