import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sambay import CheckpointError, SambaYConfig, SambaYForCausalLM
from sambay.checkpoint import INDEX_FILE, parse_size


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return SambaYForCausalLM(SambaYConfig.tiny(**kw)).eval()


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("shard", [None, "100KB"])
def test_save_then_load_is_bit_exact(tmp_path, shard):
    model = tiny(1)
    kw = {} if shard is None else {"max_shard_size": shard}
    model.save_pretrained(tmp_path, **kw)
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    if shard is None:
        assert files == ["model.safetensors"]
    else:
        assert len(files) > 2 and (tmp_path / INDEX_FILE).is_file()
        index = json.loads((tmp_path / INDEX_FILE).read_text())
        assert set(index["weight_map"].values()) == set(files)
        assert "lm_head.weight" not in index["weight_map"]  # tied: stored once
    loaded = SambaYForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    ids = torch.randint(0, 256, (2, 50))
    assert torch.equal(logits(model, ids), logits(loaded, ids))


def test_tied_head_present_in_the_file_loads(tmp_path):
    model = tiny(2)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    save_file(state, tmp_path / "model.safetensors")
    loaded = SambaYForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(0, 256, (1, 20))
    assert torch.equal(logits(model, ids), logits(loaded, ids))
    state["lm_head.weight"] += 1
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="lm_head.weight differs"):
        SambaYForCausalLM.from_pretrained(tmp_path)


def test_untied_head_is_required(tmp_path):
    model = tiny(3, tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    loaded = SambaYForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is not loaded.model.embed_tokens.weight
    ids = torch.randint(0, 256, (1, 20))
    assert torch.equal(logits(model, ids), logits(loaded, ids))
    state = load_file(tmp_path / "model.safetensors")
    del state["lm_head.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing 1 tensor.*lm_head.weight"):
        SambaYForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("model.layers.2.attn.A_log"), r"missing 1 tensor\(s\): model.layers.2.attn.A_log"),
    (lambda s: s.update({"model.layers.0.attn.extra": torch.zeros(3)}), r"unexpected 1 tensor\(s\): model.layers.0.attn.extra"),
    (lambda s: s.update({"model.layers.5.attn.Wqkv.weight": torch.zeros(7, 64)}),
     r"tensor model.layers.5.attn.Wqkv.weight has shape \(7, 64\) in the checkpoint, the model expects \(128, 64\)"),
])
def test_mismatched_checkpoints_are_refused_naming_the_tensor(tmp_path, edit, message):
    tiny(4).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    edit(state)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=message):
        SambaYForCausalLM.from_pretrained(tmp_path)


def test_config_keys_survive_a_save(tmp_path):
    cfg = SambaYConfig.tiny(rope_theta=10000.0, auto_map={"AutoConfig": "x.Y"}, use_cache=True)
    SambaYForCausalLM(cfg).save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["rope_theta"] == 10000.0 and written["auto_map"] == {"AutoConfig": "x.Y"}
    assert written["model_type"] == "phi4flash" and written["torch_dtype"] == "float32"
    assert SambaYConfig.from_pretrained(tmp_path) == cfg


def test_missing_weights_file(tmp_path):
    SambaYConfig.tiny().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SambaYForCausalLM.from_pretrained(tmp_path)


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("100KB") == 100_000
    assert parse_size(1234) == 1234
    with pytest.raises(ValueError, match="cannot parse size"):
        parse_size("lots")


def test_truncated_weights_file_is_named(tmp_path):
    from sambay import load_model

    tiny(1).save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    for cut in (len(data) // 2, 100, 3):
        (tmp_path / "model.safetensors").write_bytes(data[:cut])
        for load in (load_model, SambaYForCausalLM.from_pretrained):
            with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
                load(tmp_path)


def test_bad_index_file_is_named(tmp_path):
    tiny(1).save_pretrained(tmp_path, max_shard_size="100KB")
    (tmp_path / INDEX_FILE).write_text('{"weight_map": ')
    with pytest.raises(CheckpointError, match=r"model\.safetensors\.index\.json is not a safetensors index"):
        SambaYForCausalLM.from_pretrained(tmp_path)


def test_float_parameter_stored_as_integers_is_refused(tmp_path):
    model = tiny(1)
    model.save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    name = next(k for k in state if k.endswith("norm.weight"))
    state[name] = state[name].round().to(torch.int32)
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"model.safetensors: tensor {name} is stored as torch.int32, "
                                              "the model expects a floating-point tensor"):
        SambaYForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("device, message", [
    ("bogus", "unknown device 'bogus'; use cpu, cuda or cuda:N"),
    ("cuda:99", "cuda:99"),
])
def test_bad_device_is_a_value_error(tmp_path, device, message):
    tiny(1).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=message):
        SambaYForCausalLM.from_pretrained(tmp_path, device=device)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available on this machine"):
            SambaYForCausalLM.from_pretrained(tmp_path, device="cuda")
