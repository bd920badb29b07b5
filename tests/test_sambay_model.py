import math

import pytest
import torch

from layers.attention import DiffAttention, attention_mask
from sambay import SambaYCache, SambaYConfig, SambaYForCausalLM


def tiny_model(seed: int, **overrides) -> SambaYForCausalLM:
    torch.manual_seed(seed)
    return SambaYForCausalLM(SambaYConfig.tiny(**overrides)).eval()


def incremental_logits(model, ids, prefill: list[int], steps: int) -> torch.Tensor:
    """Prefill in the given chunk sizes, then ``steps`` one-token calls; logits of every position."""
    cache = model.allocate_cache(ids.shape[0], ids.shape[1])
    outs, t = [], 0
    for n in prefill:
        outs.append(model(ids[:, t:t + n], cache=cache).logits)
        t += n
    for _ in range(steps):
        outs.append(model(ids[:, t:t + 1], cache=cache).logits)
        t += 1
    assert t == ids.shape[1] == cache.length
    return torch.cat(outs, dim=1)


# ----------------------------------------------------------------------------- official shape


def official_state_dict_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official checkpoint, written out from SAMBAY.md."""
    d, E, N, R, K, H, G, D, ff, V = 2560, 5120, 16, 160, 4, 40, 20, 64, 10240, 200064
    shapes = {"model.embed_tokens.weight": (V, d), "model.final_layernorm.weight": (d,),
              "model.final_layernorm.bias": (d,), "lm_head.weight": (V, d)}
    for i in range(32):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "input_layernorm.bias": (d,),
                       p + "post_attention_layernorm.weight": (d,), p + "post_attention_layernorm.bias": (d,),
                       p + "mlp.fc1.weight": (2 * ff, d), p + "mlp.fc2.weight": (d, ff)})
        if i % 2 == 0 and i <= 16:  # Mamba
            shapes.update({p + "attn.in_proj.weight": (2 * E, d), p + "attn.conv1d.weight": (E, 1, K),
                           p + "attn.conv1d.bias": (E,), p + "attn.x_proj.weight": (R + 2 * N, E),
                           p + "attn.dt_proj.weight": (E, R), p + "attn.dt_proj.bias": (E,),
                           p + "attn.A_log": (E, N), p + "attn.D": (E,), p + "attn.out_proj.weight": (d, E)})
        elif i % 2 == 0:  # GMU
            shapes.update({p + "attn.in_proj.weight": (E, d), p + "attn.out_proj.weight": (d, E)})
        else:  # attention: self (i <= 17) or cross
            qkv = (H + 2 * G) * D if i <= 17 else H * D
            shapes.update({p + "attn.Wqkv.weight": (qkv, d), p + "attn.Wqkv.bias": (qkv,),
                           p + "attn.out_proj.weight": (d, H * D), p + "attn.out_proj.bias": (d,),
                           p + "attn.inner_cross_attn.subln.weight": (2 * D,)})
            shapes.update({p + f"attn.inner_cross_attn.lambda_{n}": (D,) for n in ("q1", "k1", "q2", "k2")})
    return shapes


def test_official_shape_on_meta_device():
    with torch.device("meta"):
        model = SambaYForCausalLM(SambaYConfig.official())
    n = sum(p.numel() for p in model.parameters())  # parameters() counts the tied head once
    assert 3.84e9 <= n <= 3.87e9, n
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == official_state_dict_shapes()
    assert model.lm_head.weight is model.model.embed_tokens.weight


# ----------------------------------------------------------------------------- incremental == full


@pytest.mark.parametrize("window, prefill, steps", [
    (32, [70], 40),          # prefill longer than the window, decode past it
    (32, [20, 25, 25], 40),  # chunked prefill: chunks straddle the window
    (32, [1], 60),           # decode from the first token
    (512, [700], 40),        # the official window with T=700, N=40
])
def test_prefill_then_decode_equals_full_forward(window, prefill, steps):
    seed = int(torch.randint(0, 2**31, ()).item())
    model = tiny_model(seed, sliding_window=window)
    ids = torch.randint(0, model.config.vocab_size, (2, sum(prefill) + steps))
    with torch.no_grad():
        full = model(ids).logits
        inc = incremental_logits(model, ids, prefill, steps)
    assert (full - inc).abs().max().item() < 1e-4, f"seed {seed}"


@pytest.mark.parametrize("keep, chunks", [(1, [70]), (3, [30, 40]), (1, [5, 65])])
def test_prefill_keeping_last_logits_skips_the_cross_decoder_but_not_its_results(keep, chunks):
    """logits_to_keep runs only the kept tokens through the cross-decoder (YOCO): their logits, the
    cache and every following decode step equal a prefill that computes all positions."""
    seed = int(torch.randint(0, 2**31, ()).item())
    model = tiny_model(seed, sliding_window=32)
    T, steps = sum(chunks), 20
    ids = torch.randint(1, model.config.vocab_size, (2, T + steps))
    calls = []
    with torch.no_grad():
        for n in (keep, None):
            cache, t, outs = model.allocate_cache(2, T + steps), 0, []
            for c in chunks:
                outs.append(model(ids[:, t:t + c], cache=cache, logits_to_keep=n).logits)
                t += c
            outs += [model(ids[:, t:t + 1], cache=cache).logits for t in range(T, T + steps)]
            calls.append(outs)
    for kept, full in zip(*calls):
        assert kept.shape[1] == min(keep, full.shape[1])
        assert (kept - full[:, -kept.shape[1]:]).abs().max() < 1e-5, f"seed {seed}"


def test_full_forward_with_padding_mask_equals_solo():
    model = tiny_model(2)
    p = torch.randint(1, 256, (12,))
    ids = torch.cat([torch.zeros(8, dtype=torch.long), p])[None].repeat(2, 1)
    ids[1, :8] = torch.randint(1, 256, (8,))  # second row: unpadded, 20 tokens
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :8] = 0
    with torch.no_grad():
        out = model(ids, attention_mask=mask).logits
        assert (out[0, 8:] - model(p[None]).logits[0]).abs().max() < 1e-4
        assert (out[1] - model(ids[1:]).logits[0]).abs().max() < 1e-4


# ----------------------------------------------------------------------------- pinned semantics


def test_sliding_window_sees_itself_and_window_minus_one_previous_tokens():
    W, T = 5, 12
    m = attention_mask(torch.arange(T), torch.arange(T), window=W)[0]
    for t in range(T):
        assert m[t].nonzero().flatten().tolist() == list(range(max(0, t - W + 1), t + 1))


def test_sliding_attention_layer_ignores_keys_outside_the_window():
    torch.manual_seed(3)
    W, T = 8, 20
    layer = DiffAttention(64, 4, 2, layer_idx=1)
    for p in layer.inner_cross_attn.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(1, T, 64)
    pos = torch.arange(T)

    def out(x):
        q, k, v = layer.project(x)
        return layer.attend(q, k, v, pos, pos, None, W)

    base = out(x)
    far = x.clone()
    far[:, T - 1 - W] += 1.0  # exactly `window` positions before the last query: invisible to it
    assert torch.equal(out(far)[:, -1], base[:, -1])
    near = x.clone()
    near[:, T - W] += 1.0  # window - 1 positions before: visible
    assert not torch.allclose(out(near)[:, -1], base[:, -1])


def test_lambda_init_follows_depth():
    for i in (1, 17, 31):
        layer = DiffAttention(64, 4, 2, layer_idx=i)
        assert layer.inner_cross_attn.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3 * i))


def test_bf16_model_keeps_fp32_numerics_where_the_reference_does(tmp_path):
    model = tiny_model(4)
    ids = torch.randint(0, 256, (1, 40))
    model.save_pretrained(tmp_path)
    bf = SambaYForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert bf.model.layers[0].attn.A_log.dtype == torch.float32
    assert bf.model.layers[0].attn.D.dtype == torch.float32
    assert bf.model.layers[0].attn.in_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        ref = model(ids).logits
        got = bf(ids).logits
        assert got.dtype == torch.bfloat16
        rel = ((got.float() - ref).norm() / ref.norm()).item()
        assert rel < 2e-2, rel
        cache = bf.allocate_cache(1, 40)
        state = cache.cache
        assert state.ssm_state[0].dtype == torch.float32 and state.k_pool[bf.config.kv_layer].dtype == torch.bfloat16
        inc = incremental_logits(bf, ids, [25], 15)
        assert ((inc.float() - got.float()).norm() / got.float().norm()).item() < 2e-2


# ----------------------------------------------------------------------------- errors


def test_cache_overflow_and_batch_mismatch_are_refused():
    model = tiny_model(5)
    cache = model.allocate_cache(2, 10)
    with pytest.raises(ValueError, match="exceed the cache's max_seq_len of 10"):
        model(torch.zeros(2, 11, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="batch size 3"):
        model(torch.zeros(3, 4, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="input_ids must be"):
        model(torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("mask, message", [
    ([[1, 1, 0, 1]], "left padding only"),
    ([[1, 1, 1, 0]], "left padding only"),
    ([[0, 0, 0, 0]], "without any token"),
    ([[1, 1, 1]], "expected"),
])
def test_bad_attention_masks_are_refused(mask, message):
    model = tiny_model(6)
    with pytest.raises(ValueError, match=message):
        model(torch.ones(1, 4, dtype=torch.long), attention_mask=torch.tensor(mask))


def test_cache_bytes_per_sequence():
    cache = SambaYCache(SambaYConfig.official(), 2, 16, 1, device="meta", dtype=torch.bfloat16)
    cache_bytes = cache.nbytes_per_sequence(34 * 1024)
    assert cache.block_bytes() == 16 * 2 * 20 * 64 * 2  # one pooled layer
    # 34K tokens x 2560 values x 2 bytes of shared K/V, plus constant Mamba + SWA state
    kv = 34 * 1024 * 2 * 20 * 64 * 2
    constant = 9 * 5120 * (3 * 2 + 16 * 4) + 8 * 2 * 512 * 20 * 64 * 2
    assert cache_bytes == kv + constant


def test_compiled_decode_step_on_cpu_equals_eager_and_leaves_global_config_alone():
    """Engine(compile=True) without CUDA graphs (the CPU path): the compiled decode step samples the
    eager step's greedy tokens for rows of different lengths, and its compile options do not leak
    into torch's global configuration."""
    import torch._dynamo.config
    import torch._inductor.config

    from sambay.generate import Engine, Request, SamplingParams

    before = (torch._inductor.config.emulate_precision_casts, torch._dynamo.config.automatic_dynamic_shapes)
    model = tiny_model(5, sliding_window=8, max_position_embeddings=64)
    g = torch.Generator().manual_seed(5)
    reqs = [Request(torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist(),
                    SamplingParams(temperature=0.0, max_new_tokens=10)) for n in (20, 7)]
    outs = [[x.tokens for x in Engine(model, compile=compile, cuda_graphs=False, max_batch_size=2).generate(reqs)]
            for compile in (False, True)]
    assert outs[0] == outs[1]
    assert (torch._inductor.config.emulate_precision_casts, torch._dynamo.config.automatic_dynamic_shapes) == before


def test_gemv_prologue_fuses_only_the_norms_it_computes():
    """LayerNorm with weights and RMSNorm ride in the GEMV; anything else stays a separate op. The
    decision needs no Triton (CPU wheels of torch come without it)."""
    from torch import nn

    from layers.norm import LAYER_NORM, NO_NORM, RMS_NORM, RMSNorm, fused_norm_args

    assert fused_norm_args(nn.LayerNorm(8))[0] == LAYER_NORM and fused_norm_args(RMSNorm(8))[0] == RMS_NORM
    assert fused_norm_args(None)[0] == NO_NORM
    assert fused_norm_args(nn.LayerNorm(8, elementwise_affine=False)) is None
    assert fused_norm_args(nn.LayerNorm((2, 4))) is None
    assert fused_norm_args(nn.GroupNorm(2, 8)) is None


def test_needs_autograd_sees_tensors_and_module_parameters():
    """The one check every fused inference kernel uses to step aside for training."""
    from torch import nn

    from layers import backends

    frozen, trainable = torch.zeros(2), nn.Linear(2, 2)
    assert backends.needs_autograd(frozen, trainable) and not backends.needs_autograd(frozen, None)
    assert backends.needs_autograd(torch.zeros(2, requires_grad=True))
    with torch.no_grad():
        assert not backends.needs_autograd(trainable)
