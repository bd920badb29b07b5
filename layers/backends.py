"""Which kernel runs each block: a :class:`Backends` choice that belongs to a model
(``model.backends``), active in the thread that runs the model, and announced once per choice on
the ``sambay`` logger.

Three knobs, each ``"auto"`` by default:

* ``attention``: ``"ref"`` (plain PyTorch, fp32 math), ``"sdpa"`` (torch's
  scaled_dot_product_attention for prefill, the Triton decode kernel on CUDA), ``"flash"``
  (flash-attn for prefill where it applies, else as ``"sdpa"``). ``auto`` is ``flash`` when
  flash-attn is installed and the tensors are on CUDA, ``sdpa`` on CUDA otherwise, ``ref`` on CPU.
* ``mamba``: ``"ref"`` or ``"cuda"`` (mamba-ssm's selective scan + causal-conv1d).
  ``auto`` is ``cuda`` when both packages import and the tensors are on CUDA.
* ``linear``: ``"torch"`` (``F.linear``) or ``"triton"`` (the Triton GEMV for one-row inputs,
  batch-1 decoding; more rows still go through torch). ``auto`` is ``triton`` on CUDA when
  Triton imports, ``torch`` otherwise.

A model's choice defaults to :data:`DEFAULT`, read from ``SAMBAY_ATTENTION``, ``SAMBAY_MAMBA``
and ``SAMBAY_LINEAR`` (see :mod:`layers.environment`); set another with
``model.backends = Backends(attention="ref")``. The model's ``forward`` and the engine around
each decode step (and CUDA-graph capture) make it the active choice of the calling thread with
:func:`activate`; the layers read the active choice (:func:`attention_backend` etc.). It is
thread-local: a model streaming on one thread and another model on a second thread each run
their own kernels. A plain ``threading.local`` (not a ``ContextVar``) because torch.compile
traces its attribute reads and guards on them: a compiled step recompiles for another choice.

:func:`use` forces knobs for everything the calling thread runs inside the block, models
included (tests and benchmarks: the reference path of a model for comparison).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import threading
from collections.abc import Iterator

import torch

from . import environment

log = logging.getLogger("sambay")

ATTENTION = ("auto", "ref", "sdpa", "flash")
MAMBA = ("auto", "ref", "cuda")
LINEAR = ("auto", "torch", "triton")


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


HAS_FLASH_ATTN = _installed("flash_attn")
HAS_MAMBA_KERNELS = _installed("mamba_ssm", "causal_conv1d")
HAS_TRITON = _installed("triton")


def _check(kind: str, value: str) -> None:
    allowed = {"attention": ATTENTION, "mamba": MAMBA, "linear": LINEAR}[kind]
    if value not in allowed:
        raise ValueError(f"unknown {kind} backend {value!r}; choose from {allowed}")
    if value == "flash" and not HAS_FLASH_ATTN:
        raise ValueError("attention backend 'flash' needs flash-attn: pip install flash-attn")
    if value == "cuda" and not HAS_MAMBA_KERNELS:
        raise ValueError("mamba backend 'cuda' needs mamba-ssm and causal-conv1d: pip install 'sambay[gpu]'")
    if value == "triton" and not HAS_TRITON:
        raise ValueError("linear backend 'triton' needs triton (it comes with CUDA builds of torch)")


@dataclasses.dataclass(frozen=True)
class Backends:
    """The kernels a model runs on: one value per knob (see the module docstring)."""

    attention: str = "auto"
    mamba: str = "auto"
    linear: str = "auto"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field.name, getattr(self, field.name))

    @classmethod
    def from_env(cls) -> Backends:
        """The choice the environment variables make (``auto`` for those unset)."""
        return cls(**{f.name: environment.read(f"SAMBAY_{f.name.upper()}", "auto") for f in dataclasses.fields(cls)})

    def replace(self, *, attention: str | None = None, mamba: str | None = None,
                linear: str | None = None) -> Backends:
        """This choice with the knobs given (not None) changed."""
        changes = {"attention": attention, "mamba": mamba, "linear": linear}
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


DEFAULT = Backends.from_env()  # checked at import: a bad variable fails early, naming itself

# The calling thread's active choice (attribute "backends", DEFAULT when unset) and the knobs
# forced by `use` (attribute "forced").
_local = threading.local()
_announced: set[tuple[str, str]] = set()


def active() -> Backends:
    """The choice the layers run with in this thread."""
    return getattr(_local, "backends", DEFAULT)


@contextlib.contextmanager
def _set(choice: Backends, forced: dict[str, str]) -> Iterator[None]:
    saved = _local.__dict__.copy()
    _local.backends = dataclasses.replace(choice, **forced) if forced else choice
    _local.forced = forced
    try:
        yield
    finally:
        _local.__dict__.clear()
        _local.__dict__.update(saved)


def activate(choice: Backends) -> contextlib.AbstractContextManager[None]:
    """Make ``choice`` (a model's) the active one in this thread for the block, except the knobs
    a surrounding :func:`use` forces."""
    return _set(choice, getattr(_local, "forced", {}))


def use(*, attention: str | None = None, mamba: str | None = None,
        linear: str | None = None) -> contextlib.AbstractContextManager[None]:
    """Force knobs for everything this thread runs in the block, whatever a model's own choice
    (other threads are not affected)."""
    changes = {k: v for k, v in (("attention", attention), ("mamba", mamba), ("linear", linear)) if v is not None}
    forced = {**getattr(_local, "forced", {}), **changes}
    return _set(active().replace(**changes), forced)


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


def attention_backend(device: torch.device, choice: Backends | None = None) -> str:
    """The attention kernel for tensors on ``device`` under ``choice`` (default: the active one)."""
    choice = (choice or active()).attention
    if choice == "auto":
        if device.type != "cuda":
            return "ref"
        return "flash" if HAS_FLASH_ATTN else "sdpa"
    if choice != "ref" and device.type != "cuda":
        return "ref" if choice == "flash" else choice
    return choice


def mamba_backend(device: torch.device, choice: Backends | None = None) -> str:
    """The Mamba kernels for tensors on ``device`` under ``choice`` (default: the active one)."""
    choice = (choice or active()).mamba
    if choice == "auto":
        return "cuda" if HAS_MAMBA_KERNELS and device.type == "cuda" else "ref"
    if choice == "cuda" and device.type != "cuda":
        raise ValueError("mamba backend 'cuda' needs CUDA tensors")
    return choice


def linear_backend(device: torch.device, choice: Backends | None = None) -> str:
    """The one-row linear kernel for tensors on ``device`` under ``choice`` (default: the active one)."""
    choice = (choice or active()).linear
    if choice == "auto":
        return "triton" if HAS_TRITON and device.type == "cuda" else "torch"
    return choice if device.type == "cuda" else "torch"
