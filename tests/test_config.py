import json

import pytest

from sambay import ConfigError, SambaYConfig

OFFICIAL_JSON = {
    "architectures": ["Phi4FlashForCausalLM"], "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_phi4flash.Phi4FlashConfig",
                 "AutoModelForCausalLM": "modeling_phi4flash.Phi4FlashForCausalLM"},
    "bos_token_id": 199999, "embd_pdrop": 0.0, "eos_token_id": 199999, "hidden_act": "silu",
    "hidden_size": 2560, "initializer_range": 0.02, "intermediate_size": 10240, "layer_norm_eps": 1e-05,
    "lm_head_bias": False, "mamba_conv_bias": True, "mamba_d_conv": 4, "mamba_d_state": 16,
    "mamba_dt_rank": "auto", "mamba_expand": 2, "mamba_proj_bias": False, "max_position_embeddings": 262144,
    "mb_per_layer": 2, "mlp_bias": False, "model_type": "phi4flash", "num_attention_heads": 40,
    "num_hidden_layers": 32, "num_key_value_heads": 20, "pad_token_id": 199999, "resid_pdrop": 0.0,
    "rope_theta": 10000.0, "sliding_window": 512, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
    "transformers_version": "4.46.1", "use_cache": True, "vocab_size": 200064,
}


def test_official_json_round_trips_and_derives_layout():
    cfg = SambaYConfig(**OFFICIAL_JSON)
    assert cfg.to_dict() == OFFICIAL_JSON
    assert cfg.extra["auto_map"] == OFFICIAL_JSON["auto_map"] and cfg.extra["rope_theta"] == 10000.0
    assert (cfg.head_dim, cfg.d_inner, cfg.dt_rank, cfg.window) == (64, 5120, 160, 512)
    kinds = cfg.layer_types
    assert [i for i, k in enumerate(kinds) if k == "mamba"] == list(range(0, 17, 2))
    assert [i for i, k in enumerate(kinds) if k == "sliding_attention"] == list(range(1, 16, 2))
    assert [i for i, k in enumerate(kinds) if k == "full_attention"] == [17]
    assert [i for i, k in enumerate(kinds) if k == "gmu"] == list(range(18, 32, 2))
    assert [i for i, k in enumerate(kinds) if k == "cross_attention"] == list(range(19, 32, 2))
    assert (cfg.memory_layer, cfg.kv_layer) == (16, 17)


def test_official_preset_matches_the_file():
    preset = SambaYConfig.official().to_dict()
    for k, v in preset.items():
        if k in OFFICIAL_JSON:
            assert OFFICIAL_JSON[k] == v, k


def test_per_layer_sliding_window_list_is_accepted_and_written_back(tmp_path):
    windows = [512 if i < 16 and i % 2 == 1 else None for i in range(32)]
    cfg = SambaYConfig(**{**OFFICIAL_JSON, "sliding_window": windows})
    assert cfg.window == 512
    cfg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["sliding_window"] == windows
    assert SambaYConfig.from_pretrained(tmp_path) == cfg


@pytest.mark.parametrize("overrides, message", [
    (dict(num_attention_heads=6, num_key_value_heads=3, hidden_size=96), "even"),
    (dict(num_attention_heads=5, num_key_value_heads=5, hidden_size=80), "even"),
    (dict(hidden_size=66), "not divisible by num_attention_heads"),
    (dict(num_attention_heads=4, num_key_value_heads=4, hidden_size=64), None),
    (dict(num_attention_heads=8, num_key_value_heads=6, hidden_size=64), "not divisible by num_key_value_heads"),
    (dict(sliding_window=0), "sliding_window must be a positive integer"),
    (dict(sliding_window=-3), "sliding_window must be a positive integer"),
    (dict(num_hidden_layers=6), "must be a Mamba layer"),
    (dict(mb_per_layer=1), "mb_per_layer must be >= 2"),
    (dict(mamba_dt_rank="big"), "mamba_dt_rank"),
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(vocab_size=0), "vocab_size must be a positive integer"),
    (dict(sliding_window=[32] * 8), "sliding_window list sets windows on layers"),
    (dict(sliding_window=[None, 32, None, 16, None, None, None, None]), "mixes window sizes"),
    (dict(model_type="phi3"), "model_type"),
    (dict(torch_dtype="float8"), "torch_dtype"),
])
def test_malformed_configs_are_refused_with_a_clear_error(overrides, message):
    if message is None:
        SambaYConfig.tiny(**overrides)
        return
    with pytest.raises(ConfigError, match=message):
        SambaYConfig.tiny(**overrides)


def test_config_from_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        SambaYConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "phi4flash", ', r"config\.json is not valid JSON: "),
    ("[1, 2]", r"config\.json must hold a JSON object, got a list"),
    ('"phi4flash"', r"config\.json must hold a JSON object, got a str"),
    ('{"model_type": "phi4flash", "vocab_size": 0}', r"config\.json: vocab_size must be a positive integer"),
])
def test_bad_config_file_is_named(tmp_path, text, message):
    from sambay import Phi4MiniConfig, load_model

    (tmp_path / "config.json").write_text(text)
    path = str(tmp_path / "config.json").replace("\\", "\\\\")
    for read in (SambaYConfig.from_pretrained, load_model):
        with pytest.raises(ConfigError, match=f"^{path}"):
            read(tmp_path)
        with pytest.raises(ConfigError, match=message):
            read(tmp_path)
    if "vocab_size" not in text:
        with pytest.raises(ConfigError, match=message):
            Phi4MiniConfig.from_pretrained(tmp_path)
