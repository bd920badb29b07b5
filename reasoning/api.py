"""The one-call Python API: ``load`` a checkpoint folder (or the built-in default model) and
``solve`` / ``solve_many`` / ``generate`` / ``stream`` with it (``evaluate`` is
:func:`reasoning.evaluation.evaluate`, which takes the same ``model`` argument).

    from reasoning import load, solve
    engine = load("path/to/Phi-4-mini-flash-reasoning")
    result = solve("What is 347 * 28?", engine, reference="9716")
    result.answer, result.correct, result.stats

Every function takes ``model=None`` (the built-in default model, loaded once and kept), a
folder path (loaded once and kept) or an engine from :func:`load`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import torch

from .engine import DEFAULT_MODEL_DIR, Prompt, ReasoningEngine, Result, TextStream

__all__ = ["Model", "engine_for", "generate", "load", "solve", "solve_many", "stream"]

#: What the functions accept as a model: None (the default model), a folder, or an engine.
Model = Union[None, str, os.PathLike, ReasoningEngine]

_loaded: dict[str | None, ReasoningEngine] = {}


def load(path: str | os.PathLike[str] | None = None, *, device: torch.device | str | None = None,
         dtype: torch.dtype | str | None = None, quantize: str | None = None,
         **engine_options: Any) -> ReasoningEngine:
    """Load a checkpoint folder into a ready :class:`ReasoningEngine`.

    The folder holds ``config.json`` + safetensors weights (SambaY ``phi4flash`` or dense
    ``phi3``), its tokenizer (``tokenizer.json`` / ``tokenizer_config.json``; without
    ``tokenizer.json`` the Phi-4 tokenizer is built with tiktoken from a local o200k_base file)
    and optionally ``generation_config.json`` (sampling defaults). ``path=None`` loads the
    built-in default model shipped in ``reasoning/default_model/``. ``device`` defaults to
    CUDA when available, else CPU; ``dtype`` to the checkpoint's ``torch_dtype``; ``quantize="fp8"``
    stores every projection and the lm_head as float8 e4m3 with per-row scales computed at load
    (:func:`layers.linear.quantize_model`; about half the weight bytes a decode step reads).
    ``engine_options`` (``cuda_graphs``, ``compile``, ``prefill_chunk``, ``kv_cache_dtype="fp8"`` for
    a float8 K/V cache) go to
    :class:`sambay.generate.Engine`.

    Raises:
        FileNotFoundError: the folder (or the built-in model) is missing or not a checkpoint.
    """
    if path is None:
        if not (DEFAULT_MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"the built-in default model is not in this installation ({DEFAULT_MODEL_DIR} has no config.json). "
                "Pass a checkpoint folder instead: load('path/to/checkpoint') in Python, "
                "or `sambay ask --model path/to/checkpoint ...` on the command line.")
        path = DEFAULT_MODEL_DIR
    return ReasoningEngine.from_pretrained(path, device=device, dtype=dtype, quantize=quantize, **engine_options)


def engine_for(model: Model) -> ReasoningEngine:
    """``model`` as an engine: an engine as is, else the folder (None: the default model),
    loaded on first use and kept for later calls."""
    if isinstance(model, ReasoningEngine):
        return model
    key = None if model is None else str(Path(model).expanduser().resolve())
    if key not in _loaded:
        _loaded[key] = load(model)
    return _loaded[key]


def generate(prompts: Prompt | Sequence[Prompt], model: Model = None, **kwargs: Any) -> Result | list[Result]:
    """:meth:`ReasoningEngine.generate`: one prompt -> a Result, a list of prompts -> a list."""
    return engine_for(model).generate(prompts, **kwargs)


def stream(prompts: Prompt | Sequence[Prompt], model: Model = None, **kwargs: Any) -> TextStream:
    """:meth:`ReasoningEngine.stream`: iterate text deltas (one prompt) or (index, delta) pairs."""
    return engine_for(model).stream(prompts, **kwargs)


def solve(problem: Prompt, model: Model = None, *, reference: str | None = None, system: str | None = None,
          **kwargs: Any) -> Result:
    """Solve one problem: the reasoning trace, the boxed answer, whether it matches
    ``reference`` (when given) and statistics. Sampling settings (``temperature``, ``top_p``,
    ``top_k``, ``max_new_tokens``, ``seed``) and ``stop``, ``on_text``, ``progress`` as for
    :meth:`ReasoningEngine.generate`."""
    return engine_for(model).solve(problem, reference=reference, system=system, **kwargs)


def solve_many(problems: Sequence[Prompt], model: Model = None, *, references: Sequence[str | None] | None = None,
               **kwargs: Any) -> list[Result]:
    """Solve a list of problems in batches (``batch_size=8``); see :meth:`ReasoningEngine.solve_many`."""
    return engine_for(model).solve_many(problems, references=references, **kwargs)

