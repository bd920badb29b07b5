"""The dense Phi-4-mini baseline against transformers' Phi3ForCausalLM (the reference), and its
cache, config and checkpoint behaviour."""

import json
import math

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import Phi3Config, Phi3ForCausalLM

from layers import attention
from sambay import (CheckpointError, ConfigError, DenseCache, Phi4MiniConfig, Phi4MiniForCausalLM, SambaYConfig,
                    SambaYForCausalLM, load_model)

transformers.logging.set_verbosity_error()

ORIGINAL_MAX = 32  # Phi4MiniConfig.tiny()'s original_max_position_embeddings


def tiny_model(seed: int = 0, **overrides) -> Phi4MiniForCausalLM:
    """A tiny model with weights large enough that attention is sharp (so RoPE matters) and norm
    weights away from 1 (so a misplaced norm would show)."""
    torch.manual_seed(seed)
    model = Phi4MiniForCausalLM(Phi4MiniConfig.tiny(initializer_range=0.1, **overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.copy_(1 + 0.3 * torch.randn_like(p))
    return model


def to_rope_parameters_form(config: dict) -> dict:
    """config.json as transformers 5 writes it: RoPE keys inside ``rope_parameters``."""
    d = dict(config)
    scaling = d.pop("rope_scaling")
    d["rope_parameters"] = {**scaling, "rope_type": scaling["type"], "rope_theta": d.pop("rope_theta"),
                            "partial_rotary_factor": d["partial_rotary_factor"],
                            "original_max_position_embeddings": d["original_max_position_embeddings"]}
    return d


def left_padded(lengths: list[int], vocab: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, width - n:] = torch.randint(1, vocab, (n,), generator=g)
        mask[b, width - n:] = 1
    return ids, mask


# ----------------------------------------------------------------------------- equal to transformers

VARIANTS = {
    "rope_scaling": {},  # the official config.json form
    "rope_parameters": {},  # the form transformers 5 writes (rewritten below)
    "explicit_attention_factor": dict(rope_scaling={"type": "longrope", "attention_factor": 1.1,
                                                    "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5],
                                                    "long_factor": [1.0, 2.0, 3.0, 5.0, 8.0, 13.0]}),
    "no_extension": dict(max_position_embeddings=32),  # factor 1: attention factor 1
    "plain_rope_sliding_window": dict(rope_scaling=None, partial_rotary_factor=0.5, sliding_window=24),
    "untied_head": dict(tie_word_embeddings=False),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """variant -> (our model, transformers' model loaded from the same folder)."""
    out = {}
    for i, (name, overrides) in enumerate(VARIANTS.items()):
        folder = tmp_path_factory.mktemp(name)
        model = tiny_model(10 + i, **overrides)
        model.save_pretrained(folder)
        if name == "rope_parameters":
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps(to_rope_parameters_form(config)))
            model = Phi4MiniForCausalLM.from_pretrained(folder)
            assert model.config.rope_parameters is not None and model.config.rope_scaling is None
        hf = Phi3ForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()
        out[name] = model, hf
    return out


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("T", [20, ORIGINAL_MAX, ORIGINAL_MAX + 1, 70])  # short factors, then long
def test_single_sequence_logits_equal_transformers(saved, variant, T):
    model, hf = saved[variant]
    ids = torch.randint(0, 256, (1, T), generator=torch.Generator().manual_seed(T))
    with torch.no_grad():
        ours, ref = model(ids).logits, hf(ids).logits
    assert (ours - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", ["rope_scaling", "rope_parameters", "plain_rope_sliding_window"])
@pytest.mark.parametrize("lengths", [[30, 11, 23], [70, 9, 41]])  # width below / above original_max
def test_left_padded_batch_logits_equal_transformers(saved, variant, lengths):
    model, hf = saved[variant]
    ids, mask = left_padded(lengths, 256, seed=len(lengths) + lengths[0])
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # what transformers' generate passes
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        ref = hf(ids, attention_mask=mask, position_ids=position_ids).logits
    real = mask.bool()
    assert (ours[real] - ref[real]).abs().max().item() < 1e-4


def test_long_and_short_factors_really_differ(saved):
    """The long-factor comparisons above test something: at T > original_max the logits of the
    first tokens differ from a T <= original_max forward of the same tokens."""
    model, _ = saved["rope_scaling"]
    ids = torch.randint(0, 256, (1, 70))
    with torch.no_grad():
        diff = (model(ids).logits[:, :20] - model(ids[:, :20]).logits).abs().max().item()
    assert diff > 0.1


def test_logits_to_keep(saved):
    model, hf = saved["rope_scaling"]
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        ours = model(ids, logits_to_keep=3).logits
        assert ours.shape == (2, 3, 256)
        assert (ours - hf(ids, logits_to_keep=3).logits).abs().max().item() < 1e-4


# ----------------------------------------------------------------------------- incremental == full


def incremental_logits(model, ids, prefill: list[int], steps: int, capacity: int | None = None) -> torch.Tensor:
    cache = model.allocate_cache(ids.shape[0], capacity or ids.shape[1])
    outs, t = [], 0
    for n in prefill:
        outs.append(model(ids[:, t:t + n], cache=cache).logits)
        t += n
    for _ in range(steps):
        outs.append(model(ids[:, t:t + 1], cache=cache).logits)
        t += 1
    assert t == ids.shape[1] == cache.length
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("prefill, steps", [
    ([20], 10),          # capacity 30 <= original_max: short factors throughout
    ([1], 31),           # decode from the first token up to capacity 32 exactly
    ([20], 40),          # capacity 60: long factors, the prompt alone is below original_max
    ([40], 25),          # prompt above original_max
    ([10, 15, 20], 15),  # chunked prefill straddling original_max
])
def test_prefill_then_decode_equals_full_forward(prefill, steps):
    model = tiny_model(1)
    ids = torch.randint(0, 256, (2, sum(prefill) + steps))
    with torch.no_grad():
        full = model(ids).logits
        inc = incremental_logits(model, ids, prefill, steps)
    assert (full - inc).abs().max().item() < 1e-4


def test_cache_capacity_picks_the_factors():
    """A 20-token sequence in a cache of capacity 50 (> original_max) computes what the first 20
    tokens of a 50-token full forward compute, not what a 20-token forward computes."""
    model = tiny_model(2)
    ids = torch.randint(0, 256, (1, 50))
    with torch.no_grad():
        inc = incremental_logits(model, ids[:, :20], [12], 8, capacity=50)
        assert (inc - model(ids).logits[:, :20]).abs().max().item() < 1e-4
        assert (inc - model(ids[:, :20]).logits).abs().max().item() > 0.1
        assert model.model.rotary_emb.uses_long_factors(50) and not model.model.rotary_emb.uses_long_factors(32)


def test_attention_goes_through_the_shared_kernel(monkeypatch):
    """The dense model calls ``layers.attention.attend`` as it is at call time (GPU backends re-point it)."""
    model = tiny_model(5)
    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return attention.attention_ref(*args)

    monkeypatch.setattr(attention, "attend", spy)
    with torch.no_grad():
        model(torch.randint(0, 256, (1, 7)))
    assert calls == [(1, 7, 4, 16)] * 4


def test_dense_cache_bytes_per_sequence():
    cache = DenseCache(Phi4MiniConfig.official(), 2, 16, 1, device="meta", dtype=torch.bfloat16)
    assert len(cache.k_pool) == 32 and cache.k_pool[0].shape == (2, 16, 8, 128)
    assert cache.nbytes_per_sequence(34 * 1024) == 34 * 1024 * 32 * 2 * 8 * 128 * 2  # 128 KB per token
    assert cache.block_bytes() == 16 * 32 * 2 * 8 * 128 * 2 and cache.slot_bytes() == 0


def test_cache_overflow_is_refused():
    model = tiny_model(6)
    cache = model.allocate_cache(1, 10)
    with pytest.raises(ValueError, match="exceed the cache's max_seq_len of 10"):
        model(torch.zeros(1, 11, dtype=torch.long), cache=cache)


# ----------------------------------------------------------------------------- official shape


def official_phi3_config() -> Phi3Config:
    """transformers' config with the official Phi-4-mini values, written out independently."""
    return Phi3Config(
        vocab_size=200064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
        num_attention_heads=24, num_key_value_heads=8, rms_norm_eps=1e-5, max_position_embeddings=131072,
        original_max_position_embeddings=4096, partial_rotary_factor=0.75, rope_theta=10000.0,
        rope_scaling={"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [2.0] * 48},
        tie_word_embeddings=True, bos_token_id=199999, eos_token_id=199999, pad_token_id=199999,
    )


def test_official_shape_on_meta_device_matches_transformers():
    with torch.device("meta"):
        model = Phi4MiniForCausalLM(Phi4MiniConfig.official())
        ref = Phi3ForCausalLM(official_phi3_config())
    n = sum(p.numel() for p in model.parameters())  # parameters() counts the tied head once
    assert 3.8e9 <= n <= 3.9e9, n
    assert n == sum(p.numel() for p in ref.parameters())
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert model.lm_head.weight is model.model.embed_tokens.weight
    # plain RoPE: the preset invents no LongRoPE factors (the real config.json carries them)
    assert model.config.rope.rotary_dim == 96 and model.config.rope.long_factor is None


# ----------------------------------------------------------------------------- config

OFFICIAL_JSON = {  # the official Phi-4-mini config.json layout (factor values are stand-ins)
    "architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 199999, "embd_pdrop": 0.0, "eos_token_id": 199999, "full_attn_mod": 1,
    "hidden_act": "silu", "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192,
    "interpolate_factor": 1, "lm_head_bias": False, "max_position_embeddings": 131072, "mlp_bias": False,
    "model_type": "phi3", "num_attention_heads": 24, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "original_max_position_embeddings": 4096, "pad_token_id": 199999, "partial_rotary_factor": 0.75,
    "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
    "rope_scaling": {"long_factor": [1.0 + i for i in range(48)], "short_factor": [1.0] * 48, "type": "longrope"},
    "rope_theta": 10000.0, "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0", "use_cache": True, "vocab_size": 200064,
}


def test_phi3_config_without_rope_scaling_is_plain_rope_as_in_transformers(tmp_path):
    """No rope_scaling (and no rope_parameters) in a phi3 config.json: plain RoPE, as transformers'
    Phi3Config gives; the logits equal transformers' on the same file, past original_max too."""
    tiny_model(3).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["rope_scaling"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = Phi4MiniForCausalLM.from_pretrained(tmp_path)
    assert model.config.rope_scaling is None and model.config.rope.long_factor is None
    assert model.config.rope.short_factor is None and model.config.rope.attention_factor == 1.0
    assert Phi3Config(**{k: v for k, v in config.items() if k != "model_type"}).rope_parameters["rope_type"] == "default"
    hf = Phi3ForCausalLM.from_pretrained(tmp_path, dtype=torch.float32, attn_implementation="eager").eval()
    ids = torch.randint(0, 256, (1, 3 * ORIGINAL_MAX), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(ids).logits - hf(ids).logits).abs().max().item() < 1e-4
    assert Phi4MiniConfig().rope.long_factor is None and Phi4MiniConfig.official().rope_scaling is None


def test_official_json_round_trips():
    cfg = Phi4MiniConfig(**OFFICIAL_JSON)
    assert cfg.to_dict() == OFFICIAL_JSON
    assert (cfg.head_size, cfg.rope.rotary_dim, cfg.rope.theta) == (128, 96, 10000.0)
    assert cfg.rope.long_factor == tuple(1.0 + i for i in range(48))
    assert cfg.rope.attention_factor == pytest.approx(math.sqrt(1 + math.log(131072 / 4096) / math.log(4096)))


def test_rope_parameters_form_as_transformers_writes_it(tmp_path):
    """transformers 5 rewrites the official file into the rope_parameters form: ours loads it,
    resolves the same RoPE, and writes it back unchanged."""
    Phi3Config(**{k: v for k, v in OFFICIAL_JSON.items() if k != "model_type"}).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert "rope_parameters" in written and "rope_scaling" not in written and "rope_theta" not in written
    cfg = Phi4MiniConfig.from_pretrained(tmp_path)
    assert cfg.rope == Phi4MiniConfig(**OFFICIAL_JSON).rope
    assert cfg.rope_theta is None  # absent at top level, in force from the dict
    assert cfg.to_dict() == written
    cfg.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == written


def test_presets():
    assert Phi4MiniConfig.official().to_dict() == {**{k: v for k, v in Phi4MiniConfig().to_dict().items()},
                                                   "torch_dtype": "bfloat16", "architectures": ["Phi3ForCausalLM"]}
    for k, v in Phi4MiniConfig.official().to_dict().items():
        if k in OFFICIAL_JSON and k != "rope_scaling":
            assert OFFICIAL_JSON[k] == v, k
    assert Phi4MiniConfig(head_dim=128).head_size == 128 and "head_dim" in Phi4MiniConfig(head_dim=128).to_dict()
    assert "head_dim" not in Phi4MiniConfig().to_dict()
    assert Phi4MiniConfig(eos_token_id=[199999, 200020]).eos_token_id == [199999, 200020]


def bad_factors(n):
    return {"type": "longrope", "short_factor": [1.0] * n, "long_factor": [1.0] * n}


@pytest.mark.parametrize("overrides, message", [
    (dict(rope_scaling=bad_factors(5)), r"short_factor has 5 values; rotary_dim / 2 = 6 needed"),
    (dict(rope_scaling={**bad_factors(6), "long_factor": [1.0] * 7}), "long_factor has 7 values"),
    (dict(rope_scaling={**bad_factors(6), "long_factor": [1.0, -2.0, 1, 1, 1, 1]}), "list of positive numbers"),
    (dict(rope_scaling={"type": "longrope", "short_factor": [1.0] * 6}), "long_factor must be a list"),
    (dict(rope_scaling={**bad_factors(6), "type": "yarn"}), "unknown rope type 'yarn'"),
    (dict(rope_scaling={"short_factor": [1.0] * 6, "long_factor": [1.0] * 6}), "needs a 'type' or 'rope_type'"),
    (dict(rope_scaling={**bad_factors(6), "rope_type": "default"}), "has type 'longrope' but rope_type 'default'"),
    (dict(rope_scaling={**bad_factors(6), "attention_factor": 0}), "attention_factor must be a positive number"),
    (dict(rope_parameters={**bad_factors(6), "rope_type": "longrope"}), "both rope_scaling and rope_parameters"),
    (dict(rope_scaling={**bad_factors(6), "rope_theta": 500.0}), "rope_theta = 500.0 disagrees"),
    (dict(rope_scaling={**bad_factors(6), "original_max_position_embeddings": 64}),
     "original_max_position_embeddings = 64 disagrees"),
    (dict(partial_rotary_factor=1.5), r"partial_rotary_factor must be in \(0, 1\]"),
    (dict(partial_rotary_factor=0.7, rope_scaling=None), "must be even"),
    (dict(rope_theta=-1.0), "rope_theta must be > 0"),
    (dict(num_attention_heads=4, num_key_value_heads=3), "not divisible by num_key_value_heads"),
    (dict(hidden_size=66), "not divisible by num_attention_heads"),
    (dict(head_dim=0), "head_dim must be a positive integer"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(attention_bias=True), "attention_bias=true is not supported"),
    (dict(mlp_bias=True), "mlp_bias=true is not supported"),
    (dict(sliding_window=0), "sliding_window must be null or a positive integer"),
    (dict(vocab_size=0), "vocab_size must be a positive integer"),
    (dict(model_type="phi4flash"), "model_type"),
    (dict(torch_dtype="float8"), "torch_dtype"),
])
def test_malformed_configs_are_refused_with_a_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Phi4MiniConfig.tiny(**overrides)


def test_explicit_head_dim_is_used():
    cfg = Phi4MiniConfig.tiny(hidden_size=48, head_dim=16)  # 4 heads of 16 over a 48-wide stream
    model = Phi4MiniForCausalLM(cfg)
    assert model.model.layers[0].self_attn.qkv_proj.weight.shape == ((4 + 2 * 2) * 16, 48)
    assert model(torch.randint(0, 256, (1, 5))).logits.shape == (1, 5, 256)


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("shard", [None, "60KB"])
def test_save_then_load_is_bit_exact(tmp_path, shard):
    model = tiny_model(7)
    model.save_pretrained(tmp_path, **({} if shard is None else {"max_shard_size": shard}))
    assert (len(list(tmp_path.glob("*.safetensors"))) > 1) == (shard is not None)
    loaded = Phi4MiniForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert loaded.model.rotary_emb.short_inv_freq.device.type == "cpu"  # built after the meta construction
    assert loaded.config == model.config
    ids = torch.randint(0, 256, (2, 50))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)


def test_mis_shaped_tensor_is_named(tmp_path):
    tiny_model(8).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["model.layers.2.self_attn.qkv_proj.weight"] = torch.zeros(7, 64)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"tensor model.layers.2.self_attn.qkv_proj.weight has shape \(7, 64\) "
                                              r"in the checkpoint, the model expects \(128, 64\)"):
        Phi4MiniForCausalLM.from_pretrained(tmp_path)


def test_dtype_casts_keep_rope_tables_fp32(tmp_path):
    model = tiny_model(9)
    model.save_pretrained(tmp_path)
    for m in (Phi4MiniForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16), model.to(torch.bfloat16)):
        assert m.model.rotary_emb.long_inv_freq.dtype == torch.float32
        assert m.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.bfloat16
        assert m(torch.randint(0, 256, (1, 40))).logits.dtype == torch.bfloat16


def test_load_model_dispatches_on_model_type(tmp_path):
    tiny_model(10).save_pretrained(tmp_path / "dense")
    torch.manual_seed(0)
    SambaYForCausalLM(SambaYConfig.tiny()).save_pretrained(tmp_path / "sambay")
    assert type(load_model(tmp_path / "dense")) is Phi4MiniForCausalLM
    assert type(load_model(tmp_path / "sambay", dtype=torch.bfloat16)) is SambaYForCausalLM
    config = json.loads((tmp_path / "dense" / "config.json").read_text())
    (tmp_path / "dense" / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(CheckpointError, match=r"model_type 'llama'; this package loads \['phi3', 'phi4flash'\]"):
        load_model(tmp_path / "dense")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model(tmp_path / "nowhere")
