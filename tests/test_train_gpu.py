"""Training on the GPU: gradients through the fast paths (mamba-ssm selective scan, causal-conv1d,
SDPA) against the plain-PyTorch references, and a short bf16 run of the whole training loop.

Run on a CUDA machine (skipped elsewhere): ``python -m pytest -q tests/test_train_gpu.py``.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import layers.backends as backends
from reasoning.builtin_training import CurriculumConfig, heldout_accuracy, train_on_curriculum
from reasoning.curriculum import generate_problems
from reasoning.small_tokenizer import build_small_tokenizer
from reasoning.tokenizer import load_tokenizer
from sambay import Phi4MiniConfig, Phi4MiniForCausalLM, SambaYConfig, SambaYForCausalLM, load_model
from sambay.train import IGNORE, completion_loss

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
needs_kernels = pytest.mark.skipif(not backends.HAS_MAMBA_KERNELS, reason="needs mamba-ssm and causal-conv1d")


@contextlib.contextmanager
def exact_fp32():
    """No TF32 anywhere (cuDNN convolutions use it by default), so fp32 means fp32 on both paths."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def random_batch(vocab: int, B: int = 3, T: int = 150, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (B, T + 1), generator=g)
    labels = ids[:, 1:].clone()
    labels[:, :40] = IGNORE  # a masked "prompt"
    labels[1, 120:] = IGNORE  # and a right-padded row
    return ids[:, :-1].to(CUDA), labels.to(CUDA)


def grads(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool = False, **backend: str):
    model.zero_grad(set_to_none=True)
    with backends.use(**backend), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        loss = completion_loss(model, x, y)
    loss.backward()
    return loss.item(), {n: p.grad.detach().double().clone() for n, p in model.named_parameters()}


def small_sambay(vocab: int = 384) -> SambaYForCausalLM:
    torch.manual_seed(0)
    config = SambaYConfig.tiny(vocab_size=vocab, hidden_size=128, intermediate_size=256, num_attention_heads=8,
                               num_key_value_heads=4, sliding_window=32, mamba_d_state=16)
    model = SambaYForCausalLM(config)
    with torch.no_grad():  # larger lambdas and dt than at init, so every path carries weight
        for name, p in model.named_parameters():
            if "lambda" in name:
                p.normal_(std=0.3)
    return model.to(CUDA)


@needs_kernels
def test_sambay_gradients_fast_paths_match_reference():
    model = small_sambay()
    x, y = random_batch(model.config.vocab_size)
    with exact_fp32():
        loss_ref, g_ref = grads(model, x, y, attention="ref", mamba="ref")
        loss_fast, g_fast = grads(model, x, y, attention="sdpa", mamba="cuda")
    assert loss_fast == pytest.approx(loss_ref, rel=1e-5)
    worst = {}
    for name, ref in g_ref.items():
        scale = ref.norm().item()
        err = (g_fast[name] - ref).norm().item()
        if scale == 0:
            assert err < 1e-9, name  # e.g. embedding rows of tokens absent from the batch
            continue
        worst[name] = err / scale
    # fp32 on both sides: the differences are summation order (parallel scan, SDPA tiles), ~1e-6.
    bad = {n: e for n, e in worst.items() if not e < 1e-3}
    assert not bad, bad
    kinds = {n.split(".attn.")[1] for n in worst if ".attn." in n}
    assert {"A_log", "D", "conv1d.weight", "dt_proj.bias", "Wqkv.weight", "inner_cross_attn.lambda_q1"} <= kinds


def test_dense_gradients_sdpa_match_reference():
    torch.manual_seed(0)
    model = Phi4MiniForCausalLM(Phi4MiniConfig.tiny(vocab_size=384, hidden_size=128, num_attention_heads=8,
                                                    num_key_value_heads=4, max_position_embeddings=512,
                                                    rope_scaling=None)).to(CUDA)
    x, y = random_batch(384)
    with exact_fp32():
        loss_ref, g_ref = grads(model, x, y, attention="ref")
        loss_fast, g_fast = grads(model, x, y, attention="sdpa")
    assert loss_fast == pytest.approx(loss_ref, rel=1e-5)
    for name, ref in g_ref.items():
        if ref.norm() > 0:
            assert (g_fast[name] - ref).norm() / ref.norm() < 1e-3, name


@needs_kernels
def test_sambay_bf16_autocast_gradients_close_to_reference():
    """The training precision (bf16 autocast) on both paths: bf16 rounding (~4e-3 per op) bounds
    the agreement (the reference attention works in fp32, SDPA in bf16; errors of a few 1e-2 after
    8 layers forward and back), so the check is direction (cosine) per parameter and a loose
    global error. The fp32 test above is the exact check."""
    model = small_sambay()
    x, y = random_batch(model.config.vocab_size)
    _, g_ref = grads(model, x, y, bf16=True, attention="ref", mamba="ref")
    _, g_fast = grads(model, x, y, bf16=True, attention="sdpa", mamba="cuda")
    flat_ref = torch.cat([g.flatten() for g in g_ref.values()])
    flat_fast = torch.cat([g_fast[n].flatten() for n in g_ref])
    assert (flat_fast - flat_ref).norm() / flat_ref.norm() < 8e-2
    for name, ref in g_ref.items():
        if ref.norm() > 1e-3 * flat_ref.norm():
            cos = torch.nn.functional.cosine_similarity(ref.flatten(), g_fast[name].flatten(), dim=0).item()
            assert cos > 0.97, (name, cos)


def test_training_loop_runs_on_cuda(tmp_path):
    """The whole loop as the real run uses it: bf16 autocast, worker processes, periodic greedy
    evaluation through the engine (CUDA graphs), checkpoint; then the checkpoint reloads."""
    tok = build_small_tokenizer()
    torch.manual_seed(0)
    model = SambaYForCausalLM(SambaYConfig.tiny(vocab_size=tok.vocab_size, sliding_window=32)).to(CUDA)
    cfg = CurriculumConfig(steps=40, batch_size=32, warmup_steps=10, lr=3e-3, kinds=("add",), eval_every=20,
                           eval_problems=16, eval_max_new_tokens=64, workers=2, progress=False)
    log = train_on_curriculum(model, tok, cfg, out=tmp_path / "model", log_path=tmp_path / "log.json")
    assert log["precision"] == "bf16" and log["environment"]["attention_backend"] != "ref"
    assert all(math.isfinite(v) for v in log["loss"]) and len(log["loss"]) == 40
    assert sum(log["loss"][-5:]) < 0.7 * sum(log["loss"][:5])
    assert [e["step"] for e in log["evals"]] == [20, 40] and all("accuracy" in e for e in log["evals"])
    loaded = load_model(tmp_path / "model", device=CUDA)
    result = heldout_accuracy(loaded, load_tokenizer(tmp_path / "model"),
                              generate_problems(8, seed=0, kinds=["add"], split="test"), max_new_tokens=64)
    assert result["n"] == 8
