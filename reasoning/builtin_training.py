"""Training the built-in arithmetic model: its shapes, its data (the curriculum, tokenized by the
small tokenizer), its checkpoint files and its held-out accuracy, around the generic loop of
:mod:`sambay.train`.

* Data: every batch is ``generate_problems(batch_size, seed=data_seed(seed, step), kinds,
  split="train", unique=False)``; repeating a kind in ``kinds`` weights it. Test-split problems
  (hash of the problem, see :mod:`reasoning.curriculum`) are never trained on.
* Determinism: init (on CPU, then moved), data order and schedule are functions of the seed.
  On CPU two runs give bit-identical loss curves.

    tok = build_small_tokenizer()
    model = SambaYForCausalLM(builtin_sambay_config(tok.vocab_size))
    log = train_on_curriculum(model, tok, CurriculumConfig(), out="run/model")
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers
import torch
from torch import nn
from tqdm.auto import tqdm

from sambay.config import Phi4MiniConfig, SambaYConfig
from sambay.generate import Engine, Request, SamplingParams
from sambay.train import Batch, TrainConfig, collate, train, write_json

from .answers import extract_boxed
from .curriculum import KINDS, Problem, generate_problems
from .tokenizer import Tokenizer

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
class CurriculumConfig(TrainConfig):
    """A run on the curriculum: the optimization (:class:`~sambay.train.TrainConfig`) and the data
    and held-out evaluation (with the model config and the tokenizer, everything that determines it)."""

    batch_size: int = 128
    max_len: int = 512  # longer examples are cut (the curriculum's longest is ~360 tokens)
    seed: int = 0
    kinds: tuple[str, ...] = ("add", "sub", "mul", "mul", "word", "word")  # cycled per batch: weights
    eval_problems: int = 100  # held-out sample for the periodic evaluation
    eval_max_new_tokens: int = 320  # the longest curriculum completion is ~275 tokens
    workers: int = 0  # processes building batches ahead (0: in the training loop)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kinds = tuple(self.kinds)
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"unknown problem kind {k!r}; expected one of {KINDS}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# ----------------------------------------------------------------------------- data


def data_seed(seed: int, step: int) -> int:
    """The ``generate_problems`` seed of batch ``step``."""
    return seed * 1_000_003 + step


def make_batch(step: int, cfg: CurriculumConfig, encoder: tokenizers.Tokenizer, pad_id: int) -> Batch:
    """Batch ``step`` of the run: a pure function of (cfg.seed, step, cfg.batch_size, cfg.kinds)."""
    problems = generate_problems(cfg.batch_size, seed=data_seed(cfg.seed, step), kinds=cfg.kinds,
                                 split="train", unique=False)
    texts = [t for p in problems for t in (p.chat_text(), p.prompt())]
    enc = encoder.encode_batch(texts, add_special_tokens=False)
    examples = [(enc[2 * i].ids, len(enc[2 * i + 1].ids)) for i in range(len(problems))]
    return collate(examples, cfg.max_len, pad_id)


_worker: dict[str, Any] = {}


def _worker_init(tokenizer_json: str, cfg: CurriculumConfig, pad_id: int) -> None:
    torch.set_num_threads(1)
    _worker.update(encoder=tokenizers.Tokenizer.from_str(tokenizer_json), cfg=cfg, pad_id=pad_id)


def _worker_batch(step: int) -> tuple[bytes, bytes, tuple[int, int]]:
    x, y = make_batch(step, _worker["cfg"], _worker["encoder"], _worker["pad_id"])
    return x.numpy().tobytes(), y.numpy().tobytes(), tuple(x.shape)


def batches(cfg: CurriculumConfig, tokenizer: Tokenizer, start: int = 0, prefetch: int = 16) -> Iterator[Batch]:
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


# ----------------------------------------------------------------------------- held-out accuracy, checkpoints


@torch.no_grad()
def heldout_accuracy(model: nn.Module, tokenizer: Tokenizer, problems: Sequence[Problem], *,
                     max_new_tokens: int = 320, batch_size: int = 256, keep_failures: int = 20,
                     kv_cache_dtype: str | None = None) -> dict[str, Any]:
    """Greedy exact match on curriculum problems: the ``\\boxed{}`` of the generation equals the
    problem's answer.

    Returns the accuracy, per kind, a few failures and every generation's tokens (``generations``).
    Generation goes through :class:`~sambay.generate.Engine` (temperature 0, stopping at
    ``<|end|>`` / eos), prompts rendered with the tokenizer's chat template. Also counts
    ``trace_exact``: the whole completion equals the curriculum's worked solution.
    ``kv_cache_dtype="fp8"``: the engine's K/V cache in float8 (see :mod:`sambay.cache`).
    """
    was_training = model.training
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)
    stop = sorted(tokenizer.stop_token_ids)
    prompts = [tokenizer.encode(tokenizer.chat_prompt(p.question)) for p in problems]
    # A pool just big enough for one batch, and no graph ladder: this runs inside training.
    rows = max(1, min(batch_size, len(problems)))
    per_row = -(-(max(map(len, prompts), default=1) + max_new_tokens) // 16)
    engine = Engine(model, max_batch_size=rows, num_blocks=1 + rows * per_row, block_size=16, cuda_graphs=False,
                    kv_cache_dtype=kv_cache_dtype)
    correct, trace_exact, per_kind, failures, generations = 0, 0, {}, [], []
    t0 = time.perf_counter()
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        requests = [Request(ids, params, stop_token_ids=stop) for ids in prompts[i:i + batch_size]]
        for p, g in zip(chunk, engine.generate(requests)):
            generations.append(g.tokens)
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
            "seconds": round(time.perf_counter() - t0, 2), "failures": failures, "generations": generations}


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


# ----------------------------------------------------------------------------- the run


def train_on_curriculum(
    model: nn.Module,
    tokenizer: Tokenizer,
    cfg: CurriculumConfig,
    out: str | os.PathLike | None = None,
    log_path: str | os.PathLike | None = None,
    eval_set: Sequence[Problem] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (already on its device, initialized) in place on the curriculum with
    :func:`sambay.train.train`; returns the log.

    ``out``: checkpoint folder (:func:`save_checkpoint`), written every ``ckpt_every`` steps and
    at the end. ``log_path``: the JSON log. ``eval_set``: held-out problems for the periodic
    :func:`heldout_accuracy` (default: ``cfg.eval_problems`` test-split problems).
    """
    if eval_set is None and cfg.eval_every > 0:
        eval_set = generate_problems(cfg.eval_problems, seed=cfg.seed + 10_000, kinds=list(dict.fromkeys(cfg.kinds)),
                                     split="test")

    def heldout(step: int) -> dict[str, Any]:
        result = heldout_accuracy(model, tokenizer, eval_set, max_new_tokens=cfg.eval_max_new_tokens)
        result.pop("failures")
        result.pop("generations")
        kinds = " ".join(f"{k} {v:.0%}" for k, v in result["per_kind"].items())
        tqdm.write(f"step {step}: held-out greedy accuracy {result['accuracy']:.1%} ({kinds}), "
                   f"trace exact {result['trace_exact']:.1%}")
        return result

    data = batches(cfg, tokenizer)
    try:
        return train(model, cfg, data, pad_token_id=tokenizer.pad_token_id,
                     save=None if out is None else lambda: save_checkpoint(model, tokenizer, out),
                     heldout=heldout if eval_set is not None else None, log_path=log_path)
    finally:
        data.close()
