"""``load_model``: the model class a checkpoint's ``config.json`` names, loaded."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError
from .config import read_config_json
from .model import SambaYForCausalLM
from .phi4mini import Phi4MiniForCausalLM

MODEL_CLASSES = {cls.config_class.model_type: cls for cls in (SambaYForCausalLM, Phi4MiniForCausalLM)}


def load_model(folder: str | os.PathLike, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> nn.Module:
    """Load ``folder`` as the model its ``config.json`` names: ``model_type`` ``phi4flash`` gives a
    :class:`~sambay.model.SambaYForCausalLM`, ``phi3`` a :class:`~sambay.phi4mini.Phi4MiniForCausalLM`."""
    path = Path(folder) / "config.json"
    model_type = read_config_json(path).get("model_type")
    if model_type not in MODEL_CLASSES:
        raise CheckpointError(f"{path} has model_type {model_type!r}; this package loads {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[model_type].from_pretrained(folder, dtype=dtype, device=device)
