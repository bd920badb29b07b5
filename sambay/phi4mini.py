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
from layers.rope import RotaryEmbedding, apply_rotary, rotary_store

from .cache import CacheBatch, DenseCache
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
                start: torch.Tensor | None, cache: DenseCache | None, batch: CacheBatch | None,
                norm: nn.Module | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``residual + attention(norm(x))``. x (B, T, d); cos, sin (B|1, T, rotary_dim); positions (T,)
        (pads included), or (B,) per row in a decode step (``batch.decode``: RoPE and the paged K/V
        write in one kernel, then paged attention)."""
        B, T, _ = x.shape
        H, G, D = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self.qkv_proj(x, norm=norm).split([H * D, G * D, G * D], dim=-1)
        q, k, v = q.view(B, T, H, D), k.view(B, T, G, D), v.view(B, T, G, D)
        i = self.layer_idx
        if batch is not None and batch.decode:
            k_pool, v_pool, k_scale, v_scale = cache.pools(i)
            q = rotary_store(q, k, v, cos, sin, k_pool, v_pool, batch.write_slots, k_scale, v_scale)
            out = attention.paged_attend(q, k_pool, v_pool, batch.block_table, positions, self.window,
                                         k_scale=k_scale, v_scale=v_scale)
        else:
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            if cache is not None:
                k, v = cache.kv(i, k, v, batch)
            out = attention.attend(q, k, v, positions, None if cache is not None else positions, start, self.window)
        return self.o_proj(out.reshape(B, T, H * D), residual=residual)


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config: Phi4MiniConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = Phi3Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = Phi3MLP(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                start: torch.Tensor | None, cache: DenseCache | None, batch: CacheBatch | None) -> torch.Tensor:
        # Each norm rides with the block's first projection, each residual add with its last.
        x = self.self_attn(x, cos, sin, positions, start, cache, batch, self.input_layernorm, x)
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
    >>> cache = model.allocate_cache(batch_size=1, max_seq_len=64)  # a SequenceCache over paged blocks
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

    def make_cache(self, num_blocks: int, block_size: int, num_slots: int, device: torch.device | str | None = None,
                   kv_cache_dtype: str | None = None) -> DenseCache:
        return DenseCache(self.config, num_blocks, block_size, num_slots, device or self.device, self.dtype,
                          kv_cache_dtype)

    def uses_long_rope(self, length: int) -> bool:
        """LongRoPE's long factors iff ``length`` (a request's prompt + max_new_tokens, a full
        forward's T) exceeds ``original_max_position_embeddings`` (see ``layers/rope.py``)."""
        return self.model.rotary_emb.uses_long_factors(length)

    def _forward_full(self, input_ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor | None,
                      pad_mask: torch.Tensor | None, logits_to_keep: int | None) -> torch.Tensor:
        rope_positions = positions[None] if start is None else positions[None] - start[:, None]  # (B|1, T)
        long = self.uses_long_rope(input_ids.shape[1])
        return self._run(input_ids, positions, rope_positions, long, start, None, None, logits_to_keep)

    def run(self, input_ids: torch.Tensor, cache: DenseCache, batch: CacheBatch,
            logits_to_keep: int | None = None) -> torch.Tensor:
        """Each row's LongRoPE list is ``batch.long`` (decided per request)."""
        rope_positions = batch.positions[:, None] if batch.decode else batch.positions[None]  # (B|1, T)
        return self._run(input_ids, batch.positions, rope_positions, batch.long, None, cache, batch, logits_to_keep)

    def _run(self, input_ids: torch.Tensor, positions: torch.Tensor, rope_positions: torch.Tensor,
             long: bool | torch.Tensor, start: torch.Tensor | None, cache: DenseCache | None, batch: CacheBatch | None,
             logits_to_keep: int | None = None) -> torch.Tensor:
        cos, sin = self.model.rotary_emb(rope_positions, long, self.dtype)
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, positions, start, cache, batch)
        if batch is not None and batch.lengths is not None:  # right-padded rows: each one's last token
            assert logits_to_keep == 1, "rows of different lengths keep one token's logits each"
            x = x[torch.arange(x.shape[0], device=x.device), batch.lengths - 1][:, None]
        elif logits_to_keep is not None:
            x = x[:, -logits_to_keep:]
        return self.lm_head(x, norm=self.model.norm)
