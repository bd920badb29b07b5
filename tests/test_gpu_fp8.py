"""fp8 weights, the split-K chain and the tile tables on the GPU, against the plain-PyTorch
references, on random inputs with fresh seeds. Skipped without CUDA (marked ``gpu``)."""

import copy
import json

import pytest
import torch

from helpers import cached_logits, fresh_seed, rel, small_models
import layers.backends as backends
import layers.gemv_triton as gt
from layers.linear import linear, linear_chain, linear_chain_ref, linear_ref, quantize_model
from layers.norm import RMSNorm, fused_norm_args
from layers.quant import dequantize, quantize_fp8
from sambay import SambaYConfig, SambaYForCausalLM
from sambay.generate import Engine, Request, SamplingParams

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def exact_ref(x, q, s, b, glu, norm, gate, res):  # type: ignore[no-untyped-def]
    """The same block in float64 on the dequantized weight (the fp8 values times their scales, exactly)."""
    d = lambda t: t.double() if t is not None else None  # noqa: E731
    w = q.double() * s.double()[:, None]
    return linear_ref(d(x), w, d(b), glu=glu, norm=copy.deepcopy(norm).double() if norm else None,
                      gate=d(gate), residual=d(res))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm_kind", [None, "layer", "rms"])
@pytest.mark.parametrize("N, K, bias, glu, gated, residual", [
    (2560, 10240, False, False, False, True),   # SambaY fc2 shape + fp32 residual
    (10240, 2560, False, True, False, False),   # MLP fc1: fused gate
    (5120, 2560, False, False, True, False),    # GMU in_proj: silu gate
    (5120, 160, True, False, False, False),     # dt_proj: K under one tile
    (1001, 2500, True, False, True, True),      # rows and columns off the tiles
])
def test_fp8_gemv_matches_the_dequantized_block(dtype, norm_kind, N, K, bias, glu, gated, residual):
    """The GEMV on fp8 tiles (dequantized in registers, the scale applied once per row) against the
    float64 block on the dequantized weight. fp32 layers: 1e-5. bf16 layers: no further from it than
    1.5x torch's bf16 composition on the bf16-dequantized weight (linear_ref), plus 1e-3."""
    from torch import nn

    seed = fresh_seed()
    w = torch.randn(2 * N if glu else N, K, device=CUDA, dtype=dtype) * 0.05
    q, s = quantize_fp8(w)
    b = torch.randn(w.shape[0], device=CUDA, dtype=dtype) if bias else None
    norm = None
    if norm_kind == "layer":
        norm = nn.LayerNorm(K, device=CUDA, dtype=dtype)
        nn.init.normal_(norm.bias)
    elif norm_kind == "rms":
        norm = RMSNorm(K).to(CUDA, dtype)
    if norm is not None:
        nn.init.normal_(norm.weight)
    x = (torch.randn(1, 1, K, device=CUDA) * 3 + 1).to(torch.float32 if norm is not None else dtype)
    gate = torch.randn(1, 1, N, device=CUDA, dtype=dtype) if gated else None
    res = torch.randn(1, 1, N, device=CUDA, dtype=torch.float32) if residual else None
    backends._announced.clear()
    with torch.no_grad():
        out = linear(x, q, b, scale=s, glu=glu, norm=norm, gate=gate, residual=res)
        same = linear_ref(x, q, b, scale=s, glu=glu, norm=norm, gate=gate, residual=res)
        exact = exact_ref(x, q, s, b, glu, norm, gate, res)
    assert ("linear (one row)", "triton gemv fp8") in backends._announced
    assert out.shape == same.shape and out.dtype == same.dtype
    if dtype == torch.float32:
        assert rel(out, exact) < 1e-5, f"seed {seed}"
    else:
        assert rel(out, exact) < 1.5 * rel(same, exact) + 1e-3, f"seed {seed}"


def test_fp8_gemv_on_the_lm_head_shape():
    """SambaY's head as the model has it (LayerNorm prologue, 200064 x 2560: 512 MB of fp8)."""
    from torch import nn

    seed = fresh_seed()
    q, s = quantize_fp8(torch.randn(200064, 2560, device=CUDA, dtype=torch.bfloat16) * 0.05)
    norm = nn.LayerNorm(2560, device=CUDA, dtype=torch.bfloat16)
    x = torch.randn(1, 1, 2560, device=CUDA)
    with torch.no_grad():
        out = linear(x, q, scale=s, norm=norm)
        same = linear_ref(x, q, scale=s, norm=norm)
        exact = exact_ref(x, q, s, None, False, norm, None, None)
    assert rel(out, exact) < 1.5 * rel(same, exact) + 1e-3, seed


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("N, K, glu, config", [
    (200064, 2560, False, (8, 1024, 4, 1, 1)),   # the lm_head
    (10240, 2560, True, (4, 1024, 4, 1, 1)),     # MLP fc1 with its gate
    (5120, 3072, False, (4, 2048, 8, 1, 1)),     # dense qkv_proj, ragged K tiles
])
def test_fp8_gemv_with_f16_products_matches_the_fp32_products(dtype, N, K, glu, config):
    """F16 tiles (products and their sums over K tiles in f16) behind a LayerNorm: in an f16 layer
    within 2e-3 of the fp32-product tiles, in a bf16 one no further from the float64 block on the
    dequantized weight than 1.5x torch's bf16 composition (+ 1e-3)."""
    from torch import nn

    seed = fresh_seed()
    q, s = quantize_fp8(torch.randn(2 * N if glu else N, K, device=CUDA, dtype=dtype) * 0.05)
    norm = nn.LayerNorm(K, device=CUDA, dtype=dtype)
    nn.init.normal_(norm.weight, 1.0, 0.3)
    x = torch.randn(1, 1, K, device=CUDA) * 3 + 1
    args = fused_norm_args(norm)
    with torch.no_grad():
        fast = gt.gemv(x, q, None, glu, args, scale=s, config=config)
        fp32 = gt.gemv(x, q, None, glu, args, scale=s, config=config[:4] + (0,))
        same = linear_ref(x, q, scale=s, glu=glu, norm=norm)
        exact = exact_ref(x, q, s, None, glu, norm, None, None)
    if dtype == torch.float16:
        assert rel(fast, fp32) < 2e-3, seed
    else:
        assert rel(fast, exact) < 1.5 * rel(same, exact) + 1e-3, seed


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fp8", [False, True])
@pytest.mark.parametrize("config", [None, (4, 1024, 8, 1), (2, 512, 4, 4), (1, 256, 4, 16), (8, 1024, 8, 2)])
def test_chain_matches_reference_on_the_mamba_shapes(dtype, fp8, config):
    """x_proj (192 x 5120) split along K, then dt_proj (5120 x 160) adding the partials: against the
    two projections in float64 (fp32: 1e-5; bf16: 1.5x the unfused bf16 path's error + 1e-3)."""
    seed = fresh_seed()
    x = torch.randn(1, 5120, device=CUDA, dtype=dtype)
    w1 = torch.randn(192, 5120, device=CUDA, dtype=dtype) * 0.02
    w2 = torch.randn(5120, 160, device=CUDA, dtype=dtype) * 0.1
    (q1, s1), (q2, s2) = (quantize_fp8(w1), quantize_fp8(w2)) if fp8 else ((w1, None), (w2, None))
    with torch.no_grad():
        if config is None:
            backends._announced.clear()
            y1, y2 = linear_chain(x, q1, q2, 160, scale1=s1, scale2=s2)
            assert ("linear chain (one row)", "triton split-K gemv + gemv") in backends._announced
        else:
            y1, y2 = gt.chain(x, q1, q2, 160, s1, s2, configs=(config, None))
        r1, r2 = linear_chain_ref(x, q1, q2, 160, scale1=s1, scale2=s2)
        e1 = x.double() @ (dequantize(q1, s1.double()) if fp8 else w1.double()).T
        e2 = e1[:, :160].to(dtype).double() @ (dequantize(q2, s2.double()) if fp8 else w2.double()).T
    assert y1.dtype == r1.dtype and y2.dtype == r2.dtype
    if dtype == torch.float32:
        assert rel(y1, e1) < 1e-5 and rel(y2, e2) < 1e-5, seed
    else:
        assert rel(y1, e1) < 1.5 * rel(r1, e1) + 1e-3 and rel(y2, e2) < 1.5 * rel(r2, e2) + 1e-3, seed


@pytest.mark.parametrize("rows", [2, 7, 64, 333])
def test_fp8_several_rows_dequant_and_scaled_mm(rows):
    """More than one row: ``dequant`` (default) is linear_ref itself; ``scaled_mm`` quantizes the
    activations too, so its error against the float64 block is both operands' e4m3 rounding (<6%)."""
    seed = fresh_seed()
    w = torch.randn(2 * 1536, 2560, device=CUDA, dtype=torch.bfloat16) * 0.05
    q, s = quantize_fp8(w)
    norm = torch.nn.LayerNorm(2560, device=CUDA, dtype=torch.bfloat16)
    x = torch.randn(rows, 1, 2560, device=CUDA)
    res = torch.randn(rows, 1, 1536, device=CUDA)
    with torch.no_grad():
        ref = linear_ref(x, q, None, scale=s, glu=True, norm=norm, residual=res)
        assert torch.equal(linear(x, q, None, scale=s, glu=True, norm=norm, residual=res), ref)
        backends._announced.clear()
        with backends.use(fp8_gemm="scaled_mm"):
            fast = linear(x, q, None, scale=s, glu=True, norm=norm, residual=res)
        assert ("linear (fp8, several rows)", "torch._scaled_mm") in backends._announced
        exact = exact_ref(x, q, s, None, True, norm, None, res)
    assert fast.shape == ref.shape and fast.dtype == ref.dtype
    assert rel(fast - res, exact - res.double()) < 0.06, seed


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_fp8_model_fast_matches_reference_after_prefill_and_64_steps(which, batch):
    seed = fresh_seed()
    model = small_models(torch.bfloat16, "fp8")[which]
    ids = torch.randint(0, 1000, (batch, 200 + 64), device=CUDA)

    with backends.use(attention="ref", mamba="ref", linear="torch"):
        ref = cached_logits(model, ids, 200)
    backends._announced.clear()
    fast = cached_logits(model, ids, 200)
    if batch == 1:
        assert ("linear (one row)", "triton gemv fp8") in backends._announced
        if which == 0:
            assert ("linear chain (one row)", "triton split-K gemv + gemv") in backends._announced
    assert rel(fast[:, :200], ref[:, :200]) < 1e-2, seed
    assert rel(fast[:, 200:], ref[:, 200:]) < 1e-2, seed


@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_fp8_fp32_greedy_tokens_identical_with_cuda_graphs(which):
    """fp8 weights in an fp32 model: the graphed fast path picks the reference's tokens."""
    fresh_seed()
    model = small_models(torch.float32, "fp8")[which]
    prompts = [torch.randint(0, 1000, (n,)).tolist() for n in (90, 33)]
    for batch in ([prompts[0]], prompts):
        reqs = [Request(p, SamplingParams(temperature=0.0, max_new_tokens=96)) for p in batch]
        fast = Engine(model).generate(reqs)
        with backends.use(attention="ref", mamba="ref", linear="torch"):
            ref = Engine(model, cuda_graphs=False).generate(reqs)
        for f, r in zip(fast, ref):
            assert f.tokens == r.tokens


@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_fp8_kv_cache_fast_matches_reference_after_prefill_and_64_steps(which):
    """fp8 K/V (the Triton RoPE + quantized store and paged attention on e4m3 pools) against the
    reference store and attention on the same fp8 pools: bf16 logits of a 200-token prefill
    (crossing blocks) and 64 decode steps of 2 rows within 1e-2."""
    seed = fresh_seed()
    model = small_models(torch.bfloat16)[which]
    ids = torch.randint(0, 1000, (2, 200 + 64), device=CUDA)

    with backends.use(attention="ref", mamba="ref", linear="torch"):
        ref = cached_logits(model, ids, 200, kv_cache_dtype="fp8")
    fast = cached_logits(model, ids, 200, kv_cache_dtype="fp8")
    assert rel(fast[:, :200], ref[:, :200]) < 1e-2, seed
    assert rel(fast[:, 200:], ref[:, 200:]) < 1e-2, seed


@pytest.mark.parametrize("which", [0, 1], ids=["sambay", "dense"])
def test_fp8_kv_cache_fp32_greedy_tokens_identical_with_cuda_graphs(which):
    """fp8 K/V in an fp32 model: the graphed engine picks the reference engine's tokens, alone and
    in a batch."""
    fresh_seed()
    model = small_models(torch.float32)[which]
    prompts = [torch.randint(0, 1000, (n,)).tolist() for n in (90, 33)]
    for batch in ([prompts[0]], prompts):
        reqs = [Request(p, SamplingParams(temperature=0.0, max_new_tokens=96)) for p in batch]
        fast = Engine(model, kv_cache_dtype="fp8", max_batch_size=8).generate(reqs)
        with backends.use(attention="ref", mamba="ref", linear="torch"):
            ref = Engine(model, cuda_graphs=False, kv_cache_dtype="fp8", max_batch_size=8).generate(reqs)
        for f, r in zip(fast, ref):
            assert f.tokens == r.tokens


def test_quantize_model_needs_far_less_than_the_model_twice():
    """Quantizing a bf16 model of about 1.2 GB on the GPU, layer by layer, grows memory by at most
    one layer's fp8 weight and fp32 temporaries (chunked), far less than the model."""
    cfg = SambaYConfig.tiny(hidden_size=2048, intermediate_size=8192, num_attention_heads=16, num_key_value_heads=4,
                            vocab_size=32000, num_hidden_layers=8)
    torch.manual_seed(0)
    model = SambaYForCausalLM(cfg).to(CUDA, torch.bfloat16)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    quantize_model(model, "fp8")
    peak = torch.cuda.max_memory_allocated() - base
    assert size > 1e9 and peak < 0.5 * size, (peak, size)
    assert torch.cuda.memory_allocated() < base  # the bf16 projections are gone (the embedding stays)


def test_tune_sweeps_once_caches_on_disk_and_refuses_capture(tmp_path, monkeypatch):
    cache = tmp_path / "tiles.json"
    monkeypatch.setenv("SAMBAY_GEMV_CACHE", str(cache))
    gt._swept.clear()
    key = (640, 1536, False, True, True, "gemv")
    results = gt.tune([key], min_bytes=16 * 2**20)
    text = gt.key_text(key)
    cfg, seconds = results[text]
    assert tuple(cfg) in gt.candidates(key) and seconds > 0
    data = json.loads(cache.read_text())
    assert data["device"] == torch.cuda.get_device_name() and data["tiles"][text] == list(cfg)
    gt._swept.clear()  # a new process: read back from the file
    assert gt.gemv_config(*key) == tuple(cfg)
    # inside a capture nothing is swept, not even with SAMBAY_GEMV_TUNE=1, and the call is captured
    monkeypatch.setenv("SAMBAY_GEMV_TUNE", "1")
    gt._seen.clear()
    w = torch.randn(96, 320, device=CUDA, dtype=torch.bfloat16)
    x = torch.randn(320, device=CUDA, dtype=torch.bfloat16)
    gt.gemv(x, w)  # eager and first: swept now, into the same file
    assert gt.key_text((96, 320, False, False, False, "gemv")) in json.loads(cache.read_text())["tiles"]
    w2 = torch.randn(80, 320, device=CUDA, dtype=torch.bfloat16)
    gt.gemv(x, w2, config=gt.gemv_config(80, 320))  # compiled eagerly (a given config is not noted)
    side = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(side), torch.cuda.graph(graph):
        out = gt.gemv(x, w2)
        with pytest.raises(RuntimeError, match="cannot run inside a CUDA-graph capture"):
            gt.tune([key])
    graph.replay()
    torch.cuda.synchronize()
    assert torch.allclose(out.float(), (w2.float() @ x.float()), rtol=2e-2, atol=2e-2)
    assert gt.key_text((80, 320, False, False, False, "gemv")) not in json.loads(cache.read_text())["tiles"]
    gt._swept.clear()
