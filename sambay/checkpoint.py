"""Checkpoints in the Hugging Face layout: ``config.json`` plus ``model.safetensors`` or
``model-0000i-of-0000n.safetensors`` shards with ``model.safetensors.index.json``.

Parameter names are the official ones, so loading is a one-to-one copy, checked first: a
missing, unexpected or mis-shaped tensor is refused with an error that names it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from layers.linear import quantize_model
from layers.quant import check_mode

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

# Parameters kept in fp32 whatever the model dtype (Mamba's A_log and D, as the reference does).
KEEP_IN_FP32 = ("A_log", "D")


class CheckpointError(ValueError):
    """A checkpoint does not match the model its config describes."""


def parse_size(size: int | str) -> int:
    """``"5GB"`` / ``"500MiB"`` / ``1000000`` -> bytes."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", size.upper().replace("IB", "iB"))
    if not m:
        raise ValueError(f"cannot parse size {size!r}; use e.g. '5GB', '500MB' or a number of bytes")
    base = 1024 if m.group(3) else 1000
    return int(float(m.group(1)) * base ** " KMGT".index(m.group(2) or " "))


def _open(path: Path) -> Any:
    """``safe_open(path)``; a file safetensors cannot read (truncated, not safetensors) raises
    :class:`CheckpointError` naming it."""
    try:
        return safe_open(path, framework="pt")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from None


def checkpoint_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Map each tensor name to the safetensors file holding it."""
    folder = Path(folder)
    if (folder / INDEX_FILE).is_file():
        index = folder / INDEX_FILE
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            return {name: folder / file for name, file in weight_map.items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{index} is not a safetensors index (a JSON object with a weight_map of "
                                  f"tensor name -> file): {type(e).__name__}: {e}") from None
    if (folder / SINGLE_FILE).is_file():
        with _open(folder / SINGLE_FILE) as f:
            return {name: folder / SINGLE_FILE for name in f.keys()}
    raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {folder}")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a torch.device (None: CPU); ValueError for a name torch does not know or a
    CUDA device this machine does not have."""
    try:
        d = torch.device(device) if device is not None else torch.device("cpu")
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available on this machine")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return d


def _tied(model: nn.Module) -> bool:
    return bool(getattr(model.config, "tie_word_embeddings", False))


def check_names_and_shapes(model: nn.Module, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise :class:`CheckpointError` unless ``shapes`` (name -> shape) matches the model's
    state dict exactly (a tied ``lm_head.weight`` may be absent)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    optional = {"lm_head.weight"} if _tied(model) else set()
    problems = []
    missing = sorted(set(expected) - set(shapes) - optional)
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    extra = sorted(set(shapes) - set(expected))
    if extra:
        problems.append(f"unexpected {len(extra)} tensor(s): {', '.join(extra[:10])}" + (" ..." if len(extra) > 10 else ""))
    for name in sorted(set(shapes) & set(expected)):
        if shapes[name] != expected[name]:
            problems.append(f"tensor {name} has shape {shapes[name]} in the checkpoint, the model expects {expected[name]}")
    if problems:
        raise CheckpointError("checkpoint does not match the model:\n  " + "\n  ".join(problems))


def load_pretrained(cls: Any, folder: str | os.PathLike, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None, quantize: str | None = None) -> nn.Module:
    """Build ``cls`` from ``folder/config.json`` on the meta device (instant) and load its weights;
    ``quantize="fp8"`` then stores every projection (the lm_head too) as fp8 with per-row scales
    (:func:`layers.linear.quantize_model`, layer by layer)."""
    check_mode(quantize)
    config = cls.config_class.from_pretrained(folder)
    dtype = dtype or config.checkpoint_dtype or torch.float32
    device = resolve_device(device)
    with torch.device("meta"):
        model = cls(config)
    files = checkpoint_files(folder)
    shapes = {}
    for path in sorted(set(files.values())):
        with _open(path) as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    check_names_and_shapes(model, shapes)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for path in sorted(set(files.values())):
        with _open(path) as f:
            for name in f.keys():
                t = f.get_tensor(name)  # safe_open checked that the file covers every tensor
                if t.is_floating_point() != expected[name].is_floating_point():
                    raise CheckpointError(f"{path}: tensor {name} is stored as {t.dtype}, the model expects a "
                                          f"{'floating-point' if expected[name].is_floating_point() else 'integer'} "
                                          f"tensor ({expected[name].dtype})")
                want = torch.float32 if name.rsplit(".", 1)[-1] in KEEP_IN_FP32 else dtype
                state[name] = t.to(device=device, dtype=want)
    if _tied(model):
        embed = state["model.embed_tokens.weight"]
        head = state.setdefault("lm_head.weight", embed)
        if head is not embed and not torch.equal(head, embed):
            raise CheckpointError("config has tie_word_embeddings=true but lm_head.weight differs from "
                                  "model.embed_tokens.weight")
        state["lm_head.weight"] = embed
    model.load_state_dict(state, strict=True, assign=True)
    if _tied(model):
        model.lm_head.weight = model.model.embed_tokens.weight
    if hasattr(model, "init_buffers"):  # buffers not stored in checkpoints (e.g. RoPE tables)
        model.init_buffers()
    return quantize_model(model, quantize).eval()


def save_pretrained(model: nn.Module, folder: str | os.PathLike, max_shard_size: int | str = "5GB") -> None:
    """Write ``config.json`` (with ``torch_dtype`` set to the weights' dtype) and the weights,
    in one file or in shards of at most ``max_shard_size`` bytes (a lone larger tensor gets its own).
    A model with fp8 weights is refused: the official layout holds full-precision weights, and
    ``quantize="fp8"`` at load quantizes them again."""
    if any(p.dtype == torch.float8_e4m3fn for p in model.parameters()):
        raise ValueError("this model's weights are fp8 (quantized at load), which the official checkpoint layout "
                         "does not hold: save the model before quantizing it, and load it with quantize='fp8'")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    limit = parse_size(max_shard_size)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if _tied(model):
        state.pop("lm_head.weight")
    config = model.config.to_dict()
    dtype_name = str(model.model.embed_tokens.weight.dtype).removeprefix("torch.")
    config["dtype" if "dtype" in model.config.extra else "torch_dtype"] = dtype_name
    with open(folder / "config.json", "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in state.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += n
    for stale in list(folder.glob("model*.safetensors")) + [folder / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(shards[0], folder / SINGLE_FILE, metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / file, metadata={"format": "pt"})
        weight_map.update({name: file for name in shard})
    total = sum(t.numel() * t.element_size() for t in state.values())
    with open(folder / INDEX_FILE, "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")
