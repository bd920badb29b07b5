"""Model configurations, keyed exactly like the official checkpoints' ``config.json``.

A config is a dataclass. ``SambaYConfig(**json.load(f))`` works on a downloaded ``config.json``:
keys the dataclass does not know (``auto_map``, ``rope_theta``, ``transformers_version``...) are
kept in ``extra`` and written back by :meth:`to_dict`, so a load/save round trip preserves the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

C = TypeVar("C", bound="BaseConfig")

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ConfigError(ValueError):
    """A config value is malformed or inconsistent with the architecture."""


def config_class(cls: type[C]) -> type[C]:
    """Make ``cls`` a dataclass whose ``__init__`` takes keywords only and keeps unknown ones.

    ``config.json`` files carry keys we do not model; they go to ``self.extra`` untouched.
    """
    cls = dataclass(cls)
    generated_init = cls.__init__
    known = {f.name for f in dataclasses.fields(cls)} - {"extra"}

    def __init__(self, **kwargs: Any) -> None:
        extra = dict(kwargs.pop("extra", None) or {})
        extra.update({k: kwargs.pop(k) for k in list(kwargs) if k not in known})
        generated_init(self, **kwargs, extra=extra)

    __init__.__doc__ = generated_init.__doc__
    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


class BaseConfig:
    """Shared JSON plumbing for the model configs (subclasses are :func:`config_class` dataclasses)."""

    model_type: ClassVar[str]
    extra: dict[str, Any]

    def __post_init__(self) -> None:
        mt = self.extra.pop("model_type", self.model_type)
        if mt != self.model_type:
            raise ConfigError(f"{type(self).__name__} needs model_type {self.model_type!r}, got {mt!r}")
        self.validate()

    def validate(self) -> None:  # overridden
        pass

    @property
    def checkpoint_dtype(self) -> torch.dtype | None:
        """The dtype the checkpoint stores (``torch_dtype``, or ``dtype`` as newer transformers write)."""
        name = getattr(self, "torch_dtype", None) or self.extra.get("dtype")
        if name is None:
            return None
        if name not in _DTYPES:
            raise ConfigError(f"unsupported torch_dtype {name!r}; expected one of {sorted(_DTYPES)}")
        return _DTYPES[name]

    def to_dict(self) -> dict[str, Any]:
        """The ``config.json`` content: every field, then the preserved unknown keys."""
        out: dict[str, Any] = {"model_type": self.model_type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.name != "extra" and not (f.name == "torch_dtype" and getattr(self, f.name) is None):
                out[f.name] = getattr(self, f.name)
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        return cls(**d)

    @classmethod
    def from_pretrained(cls: type[C], folder: str | os.PathLike) -> C:
        """Read ``folder/config.json``."""
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json in {folder}")
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / "config.json", "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _positive_ints(cfg: Any, *names: str) -> None:
    for n in names:
        v = getattr(cfg, n)
        _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{n} must be a positive integer, got {v!r}")


# Layer kinds of the SambaY stack (see SambaYConfig.layer_types).
MAMBA, SLIDING, FULL, GMU, CROSS = "mamba", "sliding_attention", "full_attention", "gmu", "cross_attention"


@config_class
class SambaYConfig(BaseConfig):
    """SambaY (Phi-4-mini-flash-reasoning, ``model_type`` ``phi4flash``). Defaults are the official shape.

    Layer layout, with ``h = num_hidden_layers // 2`` (the self-decoder is layers ``0..h+1``):

    * ``i < h``: Mamba when ``i % mb_per_layer == 0``, else sliding-window differential attention;
    * ``i == h``: Mamba whose SSM output is the cross-decoder's *memory*;
    * ``i == h + 1``: full causal differential attention; its K/V is the one shared KV cache;
    * ``i > h + 1``: GMU over the memory when ``i % mb_per_layer == 0``, else cross-attention
      over the shared K/V.

    ``sliding_window`` is the number of keys a query sees, itself included (so a query at
    position t sees ``t - sliding_window + 1 .. t``). It may be an int or, as some writers
    expand it, a per-layer list holding the window on the sliding layers and ``None`` elsewhere;
    the form read is the form written back.
    """

    model_type: ClassVar[str] = "phi4flash"

    vocab_size: int = 200064
    hidden_size: int = 2560
    intermediate_size: int = 10240
    num_hidden_layers: int = 32
    num_attention_heads: int = 40
    num_key_value_heads: int = 20
    sliding_window: int | list[int | None] = 512
    mb_per_layer: int = 2
    mamba_d_state: int = 16
    mamba_d_conv: int = 4
    mamba_expand: int = 2
    mamba_dt_rank: int | str = "auto"
    mamba_conv_bias: bool = True
    mamba_proj_bias: bool = False
    mlp_bias: bool = False
    lm_head_bias: bool = False
    layer_norm_eps: float = 1e-5
    hidden_act: str = "silu"
    max_position_embeddings: int = 262144
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 199999
    eos_token_id: int | list[int] | None = 199999
    pad_token_id: int | None = 199999
    torch_dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # ----- presets -----
    @classmethod
    def official(cls) -> "SambaYConfig":
        """The Phi-4-mini-flash-reasoning shape (3.85B parameters)."""
        return cls(torch_dtype="bfloat16", architectures=["Phi4FlashForCausalLM"])

    @classmethod
    def tiny(cls, **overrides: Any) -> "SambaYConfig":
        """A few-hundred-K-parameter shape for tests: 8 layers, 4 heads of 16, window 32."""
        kw: dict[str, Any] = dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=8,
            num_attention_heads=4, num_key_value_heads=2, sliding_window=32, mamba_d_state=8,
            max_position_embeddings=4096, torch_dtype="float32", bos_token_id=0, eos_token_id=0,
            pad_token_id=0,
        )
        kw.update(overrides)
        return cls(**kw)

    # ----- derived shape -----
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def d_inner(self) -> int:
        return self.mamba_expand * self.hidden_size

    @property
    def dt_rank(self) -> int:
        r = self.mamba_dt_rank
        return math.ceil(self.hidden_size / 16) if r == "auto" else int(r)

    @property
    def window(self) -> int:
        """The sliding window as one int, whichever form ``sliding_window`` was given in."""
        sw = self.sliding_window
        return sw if isinstance(sw, int) else next(w for w in sw if w is not None)

    @property
    def memory_layer(self) -> int:
        """Index ``h`` of the Mamba layer whose SSM output feeds the GMUs."""
        return self.num_hidden_layers // 2

    @property
    def kv_layer(self) -> int:
        """Index ``h + 1`` of the full-attention layer whose K/V the cross-attention layers read."""
        return self.num_hidden_layers // 2 + 1

    @property
    def layer_types(self) -> list[str]:
        h, mb = self.memory_layer, self.mb_per_layer
        kinds = []
        for i in range(self.num_hidden_layers):
            if i < h:
                kinds.append(MAMBA if i % mb == 0 else SLIDING)
            elif i == h:
                kinds.append(MAMBA)
            elif i == h + 1:
                kinds.append(FULL)
            else:
                kinds.append(GMU if i % mb == 0 else CROSS)
        return kinds

    def validate(self) -> None:
        _positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                       "num_attention_heads", "num_key_value_heads", "mb_per_layer", "mamba_d_state",
                       "mamba_d_conv", "mamba_expand", "max_position_embeddings")
        H, G, L = self.num_attention_heads, self.num_key_value_heads, self.num_hidden_layers
        _require(self.hidden_size % H == 0,
                 f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {H}")
        _require(H % 2 == 0 and G % 2 == 0,
                 f"differential attention splits heads in two: num_attention_heads ({H}) and "
                 f"num_key_value_heads ({G}) must both be even")
        _require(H % G == 0, f"num_attention_heads {H} is not divisible by num_key_value_heads {G}")
        _require(self.mb_per_layer >= 2,
                 f"mb_per_layer must be >= 2 so that attention layers exist, got {self.mb_per_layer}")
        _require(L >= 4 and (L // 2) % self.mb_per_layer == 0,
                 f"num_hidden_layers {L}: layer h = {L // 2} must be a Mamba layer "
                 f"(h % mb_per_layer == 0) to provide the cross-decoder's memory")
        r = self.mamba_dt_rank
        _require(r == "auto" or (isinstance(r, int) and r >= 1), f"mamba_dt_rank must be 'auto' or >= 1, got {r!r}")
        _require(self.hidden_act == "silu", f"hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        _require(self.layer_norm_eps > 0, f"layer_norm_eps must be > 0, got {self.layer_norm_eps}")
        sw = self.sliding_window
        if isinstance(sw, list):
            _require(len(sw) == L, f"sliding_window list has {len(sw)} entries for {L} layers")
            want = [i for i, k in enumerate(self.layer_types) if k == SLIDING]
            have = [i for i, w in enumerate(sw) if w is not None]
            _require(have == want, f"sliding_window list sets windows on layers {have}; "
                                   f"the sliding-attention layers are {want}")
            _require(len({sw[i] for i in have}) == 1, f"sliding_window list mixes window sizes: {sw}")
        _require(isinstance(self.window, int) and not isinstance(self.window, bool) and self.window >= 1,
                 f"sliding_window must be a positive integer, got {sw!r}")
        self.checkpoint_dtype  # raises on an unknown dtype name
