"""Which kernel runs each block: chosen automatically, forced with :func:`use` or environment
variables, and announced once per choice on the ``sambay`` logger.

Four knobs, each ``"auto"`` by default:

* ``attention``: ``"ref"`` (plain PyTorch, fp32 math), ``"sdpa"`` (torch's
  scaled_dot_product_attention for prefill, the Triton decode kernel on CUDA), ``"flash"``
  (flash-attn for prefill where it applies, else as ``"sdpa"``). ``auto`` is ``flash`` when
  flash-attn is installed and the tensors are on CUDA, ``sdpa`` on CUDA otherwise, ``ref`` on CPU.
* ``mamba``: ``"ref"`` or ``"cuda"`` (mamba-ssm's selective scan + causal-conv1d).
  ``auto`` is ``cuda`` when both packages import and the tensors are on CUDA.
* ``linear``: ``"torch"`` (``F.linear``) or ``"triton"`` (the Triton GEMV for one-row inputs,
  batch-1 decoding; more rows still go through torch). ``auto`` is ``triton`` on CUDA when
  Triton imports, ``torch`` otherwise.
* ``fp8_gemm``: how an fp8-weight linear layer (:mod:`layers.quant`) multiplies more than one row on
  CUDA: ``"dequant"`` (the weight dequantized to the model dtype, then torch's GEMM) or
  ``"scaled_mm"`` (activations quantized per row to e4m3, then ``torch._scaled_mm`` on the fp8
  tensor cores; bf16 models, K and N multiples of 16, else ``dequant``). ``auto`` is ``dequant``.
  One row goes through the Triton GEMV either way.

Environment: ``SAMBAY_ATTENTION=ref|sdpa|flash``, ``SAMBAY_MAMBA=ref|cuda``, ``SAMBAY_LINEAR=torch|triton``,
``SAMBAY_FP8_GEMM=dequant|scaled_mm``. The GEMV's tile tables (:mod:`layers.gemv_triton`):
``SAMBAY_GEMV_CACHE=PATH`` is the file of tiles swept on this machine (default
``~/.cache/sambay/gemv-<device name>.json``; ``SAMBAY_GEMV_CACHE=off`` reads and writes none),
``SAMBAY_GEMV_TUNE=1`` sweeps a shape missing from it on its first eager call (off by default: a
sweep takes seconds per shape; ``layers.gemv_triton.tune`` or ``examples/bench_gemv.py --tune`` runs
it ahead).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger("sambay")

ATTENTION = ("auto", "ref", "sdpa", "flash")
MAMBA = ("auto", "ref", "cuda")
LINEAR = ("auto", "torch", "triton")
FP8_GEMM = ("auto", "dequant", "scaled_mm")

_choice = {kind: os.environ.get(f"SAMBAY_{kind.upper()}", "auto") for kind in ("attention", "mamba", "linear", "fp8_gemm")}
_announced: set[tuple[str, str]] = set()


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


HAS_FLASH_ATTN = _installed("flash_attn")
HAS_MAMBA_KERNELS = _installed("mamba_ssm", "causal_conv1d")
HAS_TRITON = _installed("triton")


def _check(kind: str, value: str) -> None:
    allowed = {"attention": ATTENTION, "mamba": MAMBA, "linear": LINEAR, "fp8_gemm": FP8_GEMM}[kind]
    if value not in allowed:
        raise ValueError(f"unknown {kind} backend {value!r}; choose from {allowed}")
    if value == "flash" and not HAS_FLASH_ATTN:
        raise ValueError("attention backend 'flash' needs flash-attn: pip install flash-attn")
    if value == "cuda" and not HAS_MAMBA_KERNELS:
        raise ValueError("mamba backend 'cuda' needs mamba-ssm and causal-conv1d: pip install 'sambay[gpu]'")
    if value == "triton" and not HAS_TRITON:
        raise ValueError("linear backend 'triton' needs triton (it comes with CUDA builds of torch)")


def set_backend(*, attention: str | None = None, mamba: str | None = None, linear: str | None = None,
                fp8_gemm: str | None = None) -> None:
    """Force a backend (``"auto"`` restores the automatic choice)."""
    for kind, value in (("attention", attention), ("mamba", mamba), ("linear", linear), ("fp8_gemm", fp8_gemm)):
        if value is not None:
            _check(kind, value)
            _choice[kind] = value


@contextlib.contextmanager
def use(*, attention: str | None = None, mamba: str | None = None, linear: str | None = None,
        fp8_gemm: str | None = None) -> Iterator[None]:
    """Context manager form of :func:`set_backend`."""
    saved = dict(_choice)
    set_backend(attention=attention, mamba=mamba, linear=linear, fp8_gemm=fp8_gemm)
    try:
        yield
    finally:
        _choice.update(saved)


def announce(what: str, backend: str) -> None:
    """Log ``what`` ran on ``backend``, once per pair (silent inside torch.compile tracing)."""
    if not torch.compiler.is_compiling() and (what, backend) not in _announced:
        _announced.add((what, backend))
        log.info("%s: %s", what, backend)


def needs_autograd(*args: torch.Tensor | torch.nn.Module | None) -> bool:
    """Grad mode is on and a tensor (or a module's parameter) among ``args`` requires grad: the
    fused inference kernels have no backward, so callers take the reference path then."""
    if not torch.is_grad_enabled():
        return False
    tensors = (t for a in args if a is not None for t in (a.parameters() if isinstance(a, torch.nn.Module) else [a]))
    return any(t.requires_grad for t in tensors)


def attention_backend(device: torch.device) -> str:
    choice = _choice["attention"]
    if choice == "auto":
        if device.type != "cuda":
            return "ref"
        return "flash" if HAS_FLASH_ATTN else "sdpa"
    if choice != "ref" and device.type != "cuda":
        return "ref" if choice == "flash" else choice
    return choice


def mamba_backend(device: torch.device) -> str:
    choice = _choice["mamba"]
    if choice == "auto":
        return "cuda" if HAS_MAMBA_KERNELS and device.type == "cuda" else "ref"
    if choice == "cuda" and device.type != "cuda":
        raise ValueError("mamba backend 'cuda' needs CUDA tensors")
    return choice


def linear_backend(device: torch.device) -> str:
    choice = _choice["linear"]
    if choice == "auto":
        return "triton" if HAS_TRITON and device.type == "cuda" else "torch"
    return choice if device.type == "cuda" else "torch"


def fp8_gemm_backend() -> str:
    """``"dequant"`` or ``"scaled_mm"`` (see the module docstring)."""
    return "scaled_mm" if _choice["fp8_gemm"] == "scaled_mm" else "dequant"


for _kind, _value in _choice.items():
    _check(_kind, _value)
