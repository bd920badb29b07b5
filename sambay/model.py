"""SambaY (Phi-4-mini-flash-reasoning): the network, top to bottom.

    embed -> self-decoder  [Mamba | SWA] * (h/2), Mamba (emits memory), full attention (emits K/V)
          -> cross-decoder [GMU(memory) | cross-attention(K/V)] * ((L-h-2)/2)
          -> final LayerNorm -> lm_head (tied)

Every layer is ``x += mixer(LN(x)); x += MLP(LN(x))``. The residual stream is kept in fp32
(the reference code upcasts it at the first Mamba layer, which is layer 0); each block reads
it cast to the weights' dtype. Parameter names are the official checkpoint's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from layers.attention import DiffAttention
from layers.gmu import GMU
from layers.mamba import Mamba
from layers.mlp import MLP
from layers.norm import LayerNorm

from .cache import CacheBatch, SambaYCache
from .causal_lm import CausalLM
from .config import CROSS, FULL, GMU as GMU_KIND, MAMBA, SLIDING, SambaYConfig


@dataclass
class ForwardContext:
    """What one forward call hands from layer to layer."""

    positions: torch.Tensor  # (T,) positions of the new tokens; decode: (B,) one per row
    start: torch.Tensor | None  # (B,) left-pad tokens per row (full forward only), None without padding
    pad_mask: torch.Tensor | None  # (B, T) True on real tokens, None when all are real
    cache: SambaYCache | None
    batch: CacheBatch | None = None  # where the rows live in the cache
    memory: torch.Tensor | None = None  # layer h's SSM output for the new tokens (B, T, E)
    shared_kv: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None  # layer h+1's K, V, positions

    @property
    def decode(self) -> bool:
        return self.batch is not None and self.batch.decode


class SambaYDecoderLayer(nn.Module):
    def __init__(self, config: SambaYConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.kind = config.layer_types[layer_idx]
        self.is_memory_layer = layer_idx == config.memory_layer
        self.window = config.window if self.kind == SLIDING else None
        d = config.hidden_size
        self.input_layernorm = LayerNorm(d, eps=config.layer_norm_eps)
        if self.kind == MAMBA:
            self.attn = Mamba(d, config.d_inner, config.mamba_d_state, config.mamba_d_conv, config.dt_rank,
                              config.mamba_conv_bias, config.mamba_proj_bias)
        elif self.kind == GMU_KIND:
            self.attn = GMU(d, config.d_inner, bias=config.mamba_proj_bias)
        else:
            self.attn = DiffAttention(d, config.num_attention_heads, config.num_key_value_heads, layer_idx,
                                      cross=self.kind == CROSS, eps=config.layer_norm_eps)
        self.post_attention_layernorm = LayerNorm(d, eps=config.layer_norm_eps)
        self.mlp = MLP(d, config.intermediate_size, bias=config.mlp_bias)

    def mix(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """``x + mixer(LN(x))``: the LayerNorm rides with the mixer's first projection and the
        residual add with its last (one kernel each in batch-1 decoding)."""
        cache, batch, norm = ctx.cache, ctx.batch, self.input_layernorm
        if self.kind == MAMBA:
            if cache is None:
                out, y = self.attn(x, pad_mask=ctx.pad_mask, norm=norm, residual=x)
            elif ctx.decode:
                out, y = self.attn.step(x, cache.mamba_state(self.layer_idx, batch), norm, x)
            else:
                out, y = self.attn(x, cache.mamba_state(self.layer_idx, batch), None, fresh=batch.start == 0,
                                   norm=norm, residual=x, lengths=batch.lengths)
            if self.is_memory_layer:
                ctx.memory = y
            return out
        if self.kind == GMU_KIND:
            return self.attn(x, ctx.memory, norm, x)
        if ctx.decode and self.kind == SLIDING:  # the new k, v go straight into the ring
            ring_k, ring_v, rows, at, k_pos = cache.ring(self.layer_idx, batch)
            q, _, _ = self.attn.project(x, norm, ring=(ring_k, ring_v, rows, at))
            return self.attn.attend(q, ring_k, ring_v, ctx.positions[:, None], k_pos, ctx.start, self.window, residual=x)
        q, k, v = self.attn.project(x, norm)
        # One query per row over the paged shared K/V: decoding, and a prefill's last token per row in
        # the cross-decoder (through the decode kernel whose variants the decode graphs compiled,
        # rather than one compiled per prompt length)
        if (ctx.decode and self.kind == FULL) or (self.kind == CROSS and cache is not None and q.shape[1] == 1):
            if self.kind == FULL:
                cache.store(self.layer_idx, k, v, batch)
            k_pool, v_pool, k_scale, v_scale = cache.shared_pools()
            # prefill: (B, 1) per row or (1,) shared; contiguous like the decode step's (its stride specializes)
            q_pos = ctx.positions.reshape(-1).expand(q.shape[0]).contiguous()
            return self.attn.attend_paged(q, k_pool, v_pool, batch.block_table, q_pos, residual=x,
                                          k_scale=k_scale, v_scale=v_scale)
        q_pos = ctx.positions[:, None] if ctx.decode else ctx.positions
        if self.kind == CROSS:
            k, v, k_pos = ctx.shared_kv
        elif cache is None:
            k_pos = ctx.positions
        elif self.kind == SLIDING:
            k, v, k_pos = cache.sliding_kv(self.layer_idx, k, v, batch)
        else:
            k, v, k_pos = cache.shared_kv(k, v, batch)
        if self.kind == FULL:
            ctx.shared_kv = (k, v, k_pos)
        return self.attn.attend(q, k, v, q_pos, k_pos, ctx.start, self.window, residual=x)

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """x: the fp32 residual stream (B, T, d); each block reads it cast to the weights' dtype."""
        x = self.mix(x, ctx)
        return self.mlp(x, self.post_attention_layernorm, residual=x)


class SambaYModel(nn.Module):
    def __init__(self, config: SambaYConfig) -> None:
        super().__init__()
        # Passing the (uninitialized) weight skips nn.Embedding's own init, which on the meta
        # device costs a second of torch imports; reset_parameters initializes it instead.
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size))
        self.layers = nn.ModuleList(SambaYDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)


class SambaYForCausalLM(CausalLM):
    """SambaY language model with the official parameter names.

    >>> model = SambaYForCausalLM(SambaYConfig.tiny())
    >>> cache = model.allocate_cache(batch_size=1, max_seq_len=64)  # a SequenceCache over paged blocks
    >>> out = model(torch.tensor([[1, 2, 3]]), cache=cache)     # prefill
    >>> out = model(out.logits[:, -1:].argmax(-1), cache=cache)  # one decode step
    """

    config_class = SambaYConfig

    def __init__(self, config: SambaYConfig) -> None:
        super().__init__(config, SambaYModel(config), lm_head_bias=config.lm_head_bias)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialization (used for tests, benchmarks and training from scratch). Projections
        that write into the residual stream get std / sqrt(2 L), so its scale does not grow with depth."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=std)
            elif isinstance(m, Mamba):
                m.reset_ssm_parameters()
            elif isinstance(m, DiffAttention):
                for p in (m.inner_cross_attn.lambda_q1, m.inner_cross_attn.lambda_k1,
                          m.inner_cross_attn.lambda_q2, m.inner_cross_attn.lambda_k2):
                    nn.init.normal_(p, std=0.1)
        for layer in self.model.layers:
            for proj in (layer.attn.out_proj, layer.mlp.fc2):
                nn.init.normal_(proj.weight, std=std / (2 * len(self.model.layers)) ** 0.5)

    def make_cache(self, num_blocks: int, block_size: int, num_slots: int, device: torch.device | str | None = None,
                   kv_cache_dtype: str | None = None) -> SambaYCache:
        return SambaYCache(self.config, num_blocks, block_size, num_slots, device or self.device, self.dtype,
                           kv_cache_dtype)

    def _forward_full(self, input_ids: torch.Tensor, positions: torch.Tensor, start: torch.Tensor | None,
                      pad_mask: torch.Tensor | None, logits_to_keep: int | None) -> torch.Tensor:
        return self._run(input_ids, ForwardContext(positions, start, pad_mask, None), logits_to_keep)

    def run(self, input_ids: torch.Tensor, cache: SambaYCache, batch: CacheBatch,
            logits_to_keep: int | None = None) -> torch.Tensor:
        return self._run(input_ids, ForwardContext(batch.positions, None, None, cache, batch), logits_to_keep)

    def _run(self, input_ids: torch.Tensor, ctx: ForwardContext, logits_to_keep: int | None = None) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids).float()
        first_cross = self.config.kv_layer + 1
        for layer in self.model.layers[:first_cross]:
            x = layer(x, ctx)
        lengths = ctx.batch.lengths if ctx.batch is not None else None
        if lengths is not None:  # right-padded rows: each one's last token, at its own position
            assert logits_to_keep == 1, "rows of different lengths keep one token's logits each"
            rows, last = torch.arange(x.shape[0], device=x.device), lengths - 1
            x, ctx.memory, ctx.positions = x[rows, last][:, None], ctx.memory[rows, last][:, None], last[:, None]
        elif logits_to_keep is not None and logits_to_keep < x.shape[1]:
            # YOCO: the cross-decoder keeps no state, so only the tokens whose logits are wanted go
            # through it. Prefill costs the self-decoder plus those tokens, and grows linearly with
            # the prompt but for the one full-attention layer.
            n = logits_to_keep
            x, ctx.memory, ctx.positions = x[:, -n:], ctx.memory[:, -n:], ctx.positions[-n:]
            ctx.pad_mask = ctx.pad_mask[:, -n:] if ctx.pad_mask is not None else None
        for layer in self.model.layers[first_cross:]:
            x = layer(x, ctx)
        return self.lm_head(x, norm=self.model.final_layernorm)
