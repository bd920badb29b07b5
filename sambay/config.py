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

from layers.rope import RopeParams, longrope_attention_factor

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
        """Read ``folder/config.json``; a bad file or value raises :class:`ConfigError` naming the file."""
        path = Path(folder) / "config.json"
        d = read_config_json(path)
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(Path(folder) / "config.json", "w") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path`` (a ``config.json``): FileNotFoundError when it is missing,
    :class:`ConfigError` naming the file when it is not valid JSON or not an object."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {path.parent}")
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path} must hold a JSON object, got a {type(d).__name__}")
    return d


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


# ----------------------------------------------------------------------------- dense baseline

ROPE_TYPES = ("default", "longrope")


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)


@config_class
class Phi4MiniConfig(BaseConfig):
    """Dense Phi-4-mini / Phi-4-mini-reasoning (transformers ``Phi3ForCausalLM``, ``model_type``
    ``phi3``). Defaults are the official shape; without ``rope_scaling`` / ``rope_parameters`` RoPE
    is plain (no LongRoPE), as transformers' ``Phi3Config`` does: factors are never made up.

    RoPE comes in one of two forms, and is written back in the form read:

    * as the official checkpoints publish it: top-level ``rope_theta`` and ``partial_rotary_factor``,
      ``rope_scaling = {"type": "longrope", "short_factor": [...], "long_factor": [...]}``;
    * as current transformers writes it: ``rope_parameters = {"rope_type": "longrope", "rope_theta",
      "partial_rotary_factor", "short_factor", "long_factor", "original_max_position_embeddings", ...}``;
      there the top-level ``rope_theta`` / ``partial_rotary_factor`` may be absent (``None`` here).

    :attr:`rope` resolves either form into the values in force (a value inside the dict wins over
    the top-level one, as in transformers; the two may not disagree). ``head_dim`` is ``None`` when
    the file does not give it (then ``hidden_size // num_attention_heads``); :attr:`head_size` is
    the value in force. Keys absent from the file take the official Phi-4-mini values.
    """

    model_type: ClassVar[str] = "phi3"

    vocab_size: int = 200064
    hidden_size: int = 3072
    intermediate_size: int = 8192
    num_hidden_layers: int = 32
    num_attention_heads: int = 24
    num_key_value_heads: int = 8
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    original_max_position_embeddings: int = 4096
    rope_theta: float | None = None  # None: absent at top level (filled in unless rope_parameters is used)
    partial_rotary_factor: float | None = None  # likewise
    rope_scaling: dict[str, Any] | None = None  # None (and no rope_parameters): plain RoPE
    rope_parameters: dict[str, Any] | None = None
    sliding_window: int | None = None
    attention_bias: bool = False
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 199999
    eos_token_id: int | list[int] | None = 199999
    pad_token_id: int | None = 199999
    torch_dtype: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # Defaults of the top-level RoPE keys when the file leaves them out (the official values).
    DEFAULT_ROPE_THETA: ClassVar[float] = 10000.0
    DEFAULT_PARTIAL_ROTARY_FACTOR: ClassVar[float] = 0.75

    def __post_init__(self) -> None:
        if self.rope_parameters is None:  # official form: the top-level keys are the ones in force
            if self.rope_theta is None:
                self.rope_theta = self.DEFAULT_ROPE_THETA
            if self.partial_rotary_factor is None:
                self.partial_rotary_factor = self.DEFAULT_PARTIAL_ROTARY_FACTOR
        super().__post_init__()

    # ----- presets -----
    @classmethod
    def official(cls) -> "Phi4MiniConfig":
        """The Phi-4-mini(-reasoning) shape: 3.84B parameters, with plain RoPE. The real checkpoint's
        ``config.json`` carries the real LongRoPE factors (``rope_scaling``): load it
        (:meth:`from_pretrained`) for the real model; shapes and speed do not depend on the factors."""
        return cls(torch_dtype="bfloat16", architectures=["Phi3ForCausalLM"])

    @classmethod
    def tiny(cls, **overrides: Any) -> "Phi4MiniConfig":
        """A ~100K-parameter shape for tests: 4 layers, 4 query / 2 KV heads of 16, 12 rotary dims
        (6 LongRoPE factors), original context 32 extended to 256."""
        kw: dict[str, Any] = dict(
            vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            original_max_position_embeddings=32, partial_rotary_factor=0.75, rope_theta=10000.0,
            rope_scaling={"type": "longrope", "short_factor": [1.0, 1.05, 1.1, 1.2, 1.35, 1.5],
                          "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 8.0]},
            torch_dtype="float32", bos_token_id=0, eos_token_id=0, pad_token_id=0,
        )
        kw.update(overrides)
        return cls(**kw)

    # ----- derived shape -----
    @property
    def head_size(self) -> int:
        """``head_dim`` in force: as given, else ``hidden_size // num_attention_heads``."""
        return self.head_dim if self.head_dim is not None else self.hidden_size // self.num_attention_heads

    @property
    def rope_dict(self) -> dict[str, Any] | None:
        """The RoPE dict as read (``rope_scaling`` or ``rope_parameters``), or None."""
        return self.rope_scaling if self.rope_scaling is not None else self.rope_parameters

    def _theta_and_partial(self) -> tuple[Any, Any]:
        """rope_theta and partial_rotary_factor in force: the dict's, else the top-level, else the default."""
        d = self.rope_dict or {}
        theta = self.rope_theta if self.rope_theta is not None else self.DEFAULT_ROPE_THETA
        partial = self.partial_rotary_factor if self.partial_rotary_factor is not None else self.DEFAULT_PARTIAL_ROTARY_FACTOR
        return d.get("rope_theta", theta), d.get("partial_rotary_factor", partial)

    @property
    def rope(self) -> RopeParams:
        """The RoPE in force, resolved from either form."""
        d = self.rope_dict or {}
        kind = d.get("rope_type", d.get("type", "default"))
        theta, partial = self._theta_and_partial()
        rotary_dim = int(self.head_size * partial)
        if kind != "longrope":
            return RopeParams(rotary_dim, float(theta))
        omax = self.original_max_position_embeddings
        return RopeParams(
            rotary_dim, float(theta), tuple(map(float, d["short_factor"])), tuple(map(float, d["long_factor"])), omax,
            longrope_attention_factor(self.max_position_embeddings, omax, d.get("factor"), d.get("attention_factor")),
        )

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`BaseConfig.to_dict`, leaving out the keys of the other RoPE form and an absent head_dim."""
        optional = ["head_dim", "rope_theta", "partial_rotary_factor", "rope_parameters"]
        if self.rope_parameters is not None:
            optional.append("rope_scaling")  # else a null rope_scaling (plain RoPE) is written as read
        return {k: v for k, v in super().to_dict().items() if not (k in optional and v is None)}

    def validate(self) -> None:
        _positive_ints(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                       "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                       "original_max_position_embeddings")
        H, G = self.num_attention_heads, self.num_key_value_heads
        _require(H % G == 0, f"num_attention_heads {H} is not divisible by num_key_value_heads {G}")
        if self.head_dim is None:
            _require(self.hidden_size % H == 0,
                     f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {H} "
                     f"(give head_dim explicitly for such a shape)")
        else:
            _positive_ints(self, "head_dim")
        _require(self.hidden_act == "silu", f"hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        _require(isinstance(self.rms_norm_eps, (int, float)) and self.rms_norm_eps > 0,
                 f"rms_norm_eps must be > 0, got {self.rms_norm_eps!r}")
        for key in ("attention_bias", "mlp_bias", "lm_head_bias"):  # the Phi3 layout has no biases
            _require(not getattr(self, key, self.extra.get(key, False)),
                     f"{key}=true is not supported: Phi-4-mini's projections have no bias")
        sw = self.sliding_window
        _require(sw is None or (isinstance(sw, int) and not isinstance(sw, bool) and sw >= 1),
                 f"sliding_window must be null or a positive integer, got {sw!r}")
        self._validate_rope()
        self.checkpoint_dtype  # raises on an unknown dtype name

    def _validate_rope(self) -> None:
        _require(self.rope_scaling is None or self.rope_parameters is None,
                 "config gives both rope_scaling and rope_parameters; give one (rope_scaling as the official "
                 "checkpoints do, or rope_parameters as current transformers writes)")
        name = "rope_scaling" if self.rope_scaling is not None else "rope_parameters"
        d = self.rope_dict
        _require(d is None or isinstance(d, dict), f"{name} must be a dict or null, got {d!r}")
        d = d or {}
        for key in ("rope_theta", "partial_rotary_factor"):
            top = getattr(self, key)
            _require(top is None or (isinstance(top, (int, float)) and not isinstance(top, bool)),
                     f"{key} must be a number, got {top!r}")
            _require(key not in d or top is None or d[key] == top,
                     f"{name}.{key} = {d.get(key)!r} disagrees with the top-level {key} = {top!r}")
        _require(d.get("original_max_position_embeddings", self.original_max_position_embeddings)
                 == self.original_max_position_embeddings,
                 f"{name}.original_max_position_embeddings = {d.get('original_max_position_embeddings')!r} "
                 f"disagrees with the top-level original_max_position_embeddings = "
                 f"{self.original_max_position_embeddings} (transformers' Phi3 uses the top-level one)")
        if d:
            _require("type" in d or "rope_type" in d, f"{name} needs a 'type' or 'rope_type' key, got keys {sorted(d)}")
            _require("type" not in d or "rope_type" not in d or d["type"] == d["rope_type"],
                     f"{name} has type {d.get('type')!r} but rope_type {d.get('rope_type')!r}")
            kind = d.get("rope_type", d.get("type"))
            _require(kind in ROPE_TYPES, f"unknown rope type {kind!r} in {name}; supported: {list(ROPE_TYPES)}")
        theta, partial = self._theta_and_partial()
        _require(isinstance(theta, (int, float)) and not isinstance(theta, bool) and theta > 0,
                 f"rope_theta must be > 0, got {theta!r}")
        _require(isinstance(partial, (int, float)) and not isinstance(partial, bool) and 0 < partial <= 1,
                 f"partial_rotary_factor must be in (0, 1], got {partial!r}")
        rotary_dim = int(self.head_size * partial)
        _require(rotary_dim >= 2 and rotary_dim % 2 == 0,
                 f"rotary dims = int(head_dim {self.head_size} * partial_rotary_factor {partial}) = {rotary_dim} "
                 f"must be even and >= 2")
        if d.get("rope_type", d.get("type")) == "longrope":
            for key in ("short_factor", "long_factor"):
                v = d.get(key)
                _require(_numbers(v), f"{name}.{key} must be a list of positive numbers, got {v!r}")
                _require(len(v) == rotary_dim // 2,
                         f"{name}.{key} has {len(v)} values; rotary_dim / 2 = {rotary_dim // 2} needed "
                         f"(head_dim {self.head_size} * partial_rotary_factor {partial} = {rotary_dim} rotary dims)")
            for key in ("factor", "attention_factor"):
                v = d.get(key)
                _require(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0),
                         f"{name}.{key} must be a positive number, got {v!r}")
