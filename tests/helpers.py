"""Helpers the kernel and model tests share (importable as ``helpers``: pytest puts tests/ on the path)."""

import torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float64; a non-finite ``a`` fails the test."""
    a, b = a.double(), b.double()
    assert torch.isfinite(a).all()
    return ((a - b).norm() / b.norm()).item()


def fresh_seed() -> int:
    """Seed torch with a new random seed and return it, so a failure names the inputs it saw."""
    seed = int(torch.randint(0, 2**31, ()).item())
    torch.manual_seed(seed)
    return seed


def small_models(dtype: torch.dtype, quantize: str | None = None) -> list:
    """[SambaY, dense] with random weights in small shapes (vocabulary 1000) on CUDA in ``dtype``,
    the weights quantized (``quantize="fp8"``) after the cast; the same weights every call."""
    from layers.linear import quantize_model
    from sambay import Phi4MiniConfig, Phi4MiniForCausalLM, SambaYConfig, SambaYForCausalLM

    sambay = SambaYConfig.tiny(hidden_size=256, intermediate_size=512, num_attention_heads=8,
                               num_key_value_heads=4, sliding_window=64, vocab_size=1000, mamba_d_state=16)
    out = []
    for cls, cfg in ((SambaYForCausalLM, sambay), (Phi4MiniForCausalLM, Phi4MiniConfig.tiny(vocab_size=1000))):
        torch.manual_seed(0)
        out.append(quantize_model(cls(cfg).to("cuda", dtype).eval(), quantize))
    return out


def cached_logits(model, ids: torch.Tensor, prompt: int, kv_cache_dtype: str | None = None) -> torch.Tensor:
    """Logits of ``ids`` (B, T) through the model's cache: a ``prompt``-token prefill, then one
    decode step per token after it -> (B, T, V)."""
    cache = model.allocate_cache(ids.shape[0], ids.shape[1], kv_cache_dtype=kv_cache_dtype)
    with torch.no_grad():
        logits = [model(ids[:, :prompt], cache=cache).logits]
        logits += [model(ids[:, t:t + 1], cache=cache).logits for t in range(prompt, ids.shape[1])]
    return torch.cat(logits, 1)
