"""Dense Phi-4-mini (transformers ``Phi3ForCausalLM``, model type ``phi3``): the network, top to bottom.

    embed -> [x += attn(RMSNorm(x)); x += MLP(RMSNorm(x))] * L -> RMSNorm -> lm_head (tied)

The baseline SambaY is compared against, built from the same parts: the attention kernel
(``layers.attention.attend``, looked up at each call so a GPU backend can re-point it), RMSNorm,
the gated SiLU MLP, padding handling, output type and checkpoint code. Attention is GQA with
partial rotary LongRoPE (``layers/rope.py``, which also states when the long factors apply). The
residual stream stays in the model dtype, as in transformers. Parameter names are transformers'
Phi3 names, those of the official checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn

from layers import attention
from layers.linear import Linear
from layers.mlp import Phi3MLP
from layers.norm import RMSNorm
from layers.rope import RotaryEmbedding, apply_rotary

from .cache import DenseCache
from .config import Phi4MiniConfig
from .causal_lm import CausalLM


class Phi3Attention(nn.Module):
    """GQA self-attention: fused ``qkv_proj`` (queries, then keys, then values; no bias), RoPE, ``o_proj``."""

    def __init__(self, config: Phi4MiniConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                            config.head_size)
        self.window = config.sliding_window
        H, G, D = self.num_heads, self.num_kv_heads, self.head_dim
        self.qkv_proj = Linear(config.hidden_size, (H + 2 * G) * D, bias=False)
        self.o_proj = Linear(H * D, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                start: torch.Tensor | None, cache: DenseCache | None, decode: bool = False,
                norm: nn.Module | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + attention(norm(x))``. x (B, T, d); cos, sin (B|1, T, rotary_dim); positions (T,)
        absolute (pads included). ``decode``: one token through the cache's graph-capturable ``rotary_kv_step``."""
        B, T, _ = x.shape
        H, G, D = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv_proj(x, norm=norm).split([H * D, G * D, G * D], dim=-1)
        q, k, v = q.view(B, T, H, D), k.view(B, T, G, D), v.view(B, T, G, D)
        if decode:
            q, k, v, k_pos = cache.rotary_kv_step(self.layer_idx, q, k, v, cos, sin)
        else:
            q, k, k_pos = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), positions
            if cache is not None:
                k, v, k_pos = cache.kv(self.layer_idx, k, v)
        out = attention.attend(q, k, v, positions, k_pos, start, self.window)  # (B, T, H, D)
        return self.o_proj(out.reshape(B, T, H * D), residual=residual)


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config: Phi4MiniConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = Phi3Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = Phi3MLP(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                start: torch.Tensor | None, cache: DenseCache | None, decode: bool = False) -> torch.Tensor:
        # Each norm rides with the block's first projection, each residual add with its last.
        x = self.self_attn(x, cos, sin, positions, start, cache, decode, self.input_layernorm, x)
        return self.mlp(x, self.post_attention_layernorm, x)


class Phi3Model(nn.Module):
    def __init__(self, config: Phi4MiniConfig) -> None:
        super().__init__()
        # Passing the (uninitialized) weight skips nn.Embedding's own init (see SambaYModel).
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(Phi3DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rope)  # buffers only, none in checkpoints


class Phi4MiniForCausalLM(CausalLM):
    """Dense Phi-4-mini language model with transformers' Phi3 parameter names.

    >>> model = Phi4MiniForCausalLM(Phi4MiniConfig.tiny())
    >>> cache = model.allocate_cache(batch_size=1, max_seq_len=64)
    >>> out = model(torch.tensor([[1, 2, 3]]), cache=cache)     # prefill
    >>> out = model(out.logits[:, -1:].argmax(-1), cache=cache)  # one decode step
    """

    config_class = Phi4MiniConfig

    def __init__(self, config: Phi4MiniConfig) -> None:
        super().__init__(config, Phi3Model(config))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialization (used for tests, benchmarks and training from scratch). Projections
        that write into the residual stream get std / sqrt(2 L), so its scale does not grow with depth."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        for layer in self.model.layers:
            for proj in (layer.self_attn.o_proj, layer.mlp.down_proj):
                nn.init.normal_(proj.weight, std=std / (2 * len(self.model.layers)) ** 0.5)

    def init_buffers(self) -> None:
        """Build the RoPE tables on the weights' device (after loading into a meta-built model)."""
        self.model.rotary_emb.init_buffers(self.device)

    def allocate_cache(self, batch_size: int, max_seq_len: int) -> DenseCache:
        """Preallocate K/V for ``batch_size`` sequences of up to ``max_seq_len`` tokens. ``max_seq_len``
        is also the capacity that picks LongRoPE's short or long factors (see ``layers/rope.py``)."""
        return DenseCache(self.config, batch_size, max_seq_len, self.device, self.dtype)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor | None,
                 pad_mask: torch.Tensor | None, cache: DenseCache | None, logits_to_keep: int | None) -> torch.Tensor:
        """LongRoPE uses the long factors iff the capacity (the cache's ``max_seq_len``, else T)
        exceeds ``original_max_position_embeddings``."""
        capacity = cache.max_seq_len if cache is not None else input_ids.shape[1]
        return self._run(input_ids, positions, start, cache, capacity, False, logits_to_keep)

    def decode_step(self, input_ids: torch.Tensor, cache: DenseCache) -> torch.Tensor:
        logits = self._run(input_ids, cache.seqlen, cache.start, cache, cache.max_seq_len, True)
        cache.seqlen += 1
        return logits

    def _run(self, input_ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor | None,
             cache: DenseCache | None, capacity: int, decode: bool, logits_to_keep: int | None = None) -> torch.Tensor:
        rope_positions = positions[None] if start is None else positions[None] - start[:, None]  # (B|1, T)
        cos, sin = self.model.rotary_emb(rope_positions, capacity, self.dtype)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, positions, start, cache, decode)
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]
        return self.lm_head(x, norm=self.model.norm)
