"""All inference state, preallocated for a batch of sequences up to ``max_seq_len`` tokens.

SambaY keeps (SAMBAY.md, "Inference state"):

* per self-decoder Mamba layer: a conv state (B, E, K-1) and an SSM state (B, E, N, fp32);
* per sliding-window layer: a ring of the last ``window`` keys/values (B, W, G, D);
* for the full-attention layer h+1 only: the one growing K/V (B, max_seq_len, G, D), which
  every cross-attention layer reads;
* nothing for the GMU and cross-attention layers: the memory and the shared K/V are handed
  down the cross-decoder inside a forward call.

The dense Phi-4-mini baseline keeps a K/V per layer (:class:`DenseCache`), 32 x 2 x 8 x 128
values per token for the official shape (16x SambaY's).

Positions are absolute indices into the (left-padded) batch; ``start[b]`` counts row b's pad
tokens, which attention skips and Mamba zeroes.
"""

from __future__ import annotations

import torch

from layers.rope import rotary_store

from .config import FULL, MAMBA, SLIDING, Phi4MiniConfig, SambaYConfig


class CacheBase:
    """Length and padding bookkeeping shared by the model caches.

    ``length`` (host int) and ``seqlen`` (a device tensor of shape (1,)) both count the tokens
    written so far, pads included; the one-token decode step reads only device tensors, so a
    captured CUDA graph of it stays valid from step to step. ``start`` (B,) counts each row's
    left-pad tokens (zeros without padding).
    """

    def __init__(self, batch_size: int, max_seq_len: int, device: torch.device | str | None) -> None:
        if batch_size < 1 or max_seq_len < 1:
            raise ValueError(f"batch_size and max_seq_len must be >= 1, got {batch_size}, {max_seq_len}")
        self.batch_size, self.max_seq_len = batch_size, max_seq_len
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.length = 0
        self.seqlen = torch.zeros(1, dtype=torch.long, device=self.device)
        self.start = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.max_start = 0  # max(start) as a host int: no padding when 0

    def set_padding(self, start: torch.Tensor) -> None:
        """Record each row's number of left-pad tokens (before anything is written)."""
        self.start.copy_(start)
        self.max_start = int(start.max())

    def check_room(self, batch_size: int, num_new: int) -> None:
        if batch_size != self.batch_size:
            raise ValueError(f"input batch size {batch_size} does not match the cache's {self.batch_size}")
        if self.length + num_new > self.max_seq_len:
            raise ValueError(f"{self.length} cached + {num_new} new tokens exceed the cache's "
                             f"max_seq_len of {self.max_seq_len}")

    def advance(self, num_new: int) -> None:
        self.length += num_new
        self.seqlen += num_new

    def reset(self) -> None:
        """Forget every sequence (stale buffer contents are masked or overwritten on reuse)."""
        self.length, self.max_start = 0, 0
        self.seqlen.zero_()
        self.start.zero_()


class SambaYCache(CacheBase):
    """Inference state of a :class:`~sambay.model.SambaYForCausalLM` (see the module docstring).

    Every layer's state is a tensor of its own (keyed by layer index), never a view into a
    stacked buffer: in-place updates of views would make a compiled step copy the whole stack.

    Two ways in: the eager methods (``sliding_kv``, ``shared_kv``) take any number of new
    tokens and index with host ints; the decode methods (``begin_decode``, ``sliding_step``,
    ``shared_step``) take one token and index with ``seqlen``, so they can be graph-captured.
    """

    def __init__(self, config: SambaYConfig, batch_size: int, max_seq_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(batch_size, max_seq_len, device)
        B, E, N, K = batch_size, config.d_inner, config.mamba_d_state, config.mamba_d_conv
        G, D, W = config.num_key_value_heads, config.head_dim, config.window
        kinds = config.layer_types
        dev = self.device
        self.window = W
        assert kinds[config.kv_layer] == FULL
        mamba = [i for i, k in enumerate(kinds) if k == MAMBA]
        sliding = [i for i, k in enumerate(kinds) if k == SLIDING]
        self.conv_state = {i: torch.zeros(B, E, K - 1, device=dev, dtype=dtype) for i in mamba}
        self.ssm_state = {i: torch.zeros(B, E, N, device=dev, dtype=torch.float32) for i in mamba}
        # Ring of the last W tokens: position p lives in slot p % W.
        self.ring_k = {i: torch.zeros(B, W, G, D, device=dev, dtype=dtype) for i in sliding}
        self.ring_v = {i: torch.zeros(B, W, G, D, device=dev, dtype=dtype) for i in sliding}
        self.ring_pos = torch.full((W,), -1, dtype=torch.long, device=dev)  # decode: position in each slot
        self._slots = torch.arange(W, device=dev)
        self.k = torch.zeros(B, max_seq_len, G, D, device=dev, dtype=dtype)
        self.v = torch.zeros_like(self.k)

    def mamba_state(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv_state[layer_idx], self.ssm_state[layer_idx]

    # ----- eager: T new tokens, host-int indexing
    def sliding_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor,
                   positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keys/values a sliding layer attends to for new k, v (B, T, G, D): the ring's tokens in
        position order, then the new ones. The last ``window`` new tokens then go into the ring."""
        ring_k, ring_v, W, past = self.ring_k[layer_idx], self.ring_v[layer_idx], self.window, self.length
        if past == 0:
            keys, values, k_pos = k, v, positions
        else:
            old = torch.arange(past - W, past, device=self.device)  # negative: never written
            keys = torch.cat([ring_k[:, old % W], k], dim=1)
            values = torch.cat([ring_v[:, old % W], v], dim=1)
            k_pos = torch.cat([old, positions])
        slots = positions[-W:] % W
        ring_k.index_copy_(1, slots, k[:, -W:])
        ring_v.index_copy_(1, slots, v[:, -W:])
        return keys, values, k_pos

    def shared_kv(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Append layer h+1's new k, v (B, T, G, D); return all cached K/V (slot s = position s)."""
        end = self.length + k.shape[1]
        self.k[:, self.length:end] = k
        self.v[:, self.length:end] = v
        return self.k[:, :end], self.v[:, :end], None

    # ----- decode: one token at position seqlen, device indexing
    def begin_decode(self) -> None:
        """Before a decode step: the position each ring slot holds once this token is in."""
        torch.sub(self.seqlen, (self.seqlen - self._slots) % self.window, out=self.ring_pos)

    def sliding_step(self, layer_idx: int, k: torch.Tensor,
                     v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        slot = self.seqlen % self.window
        self.ring_k[layer_idx].index_copy_(1, slot, k)
        self.ring_v[layer_idx].index_copy_(1, slot, v)
        return self.ring_k[layer_idx], self.ring_v[layer_idx], self.ring_pos

    def shared_step(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        self.k.index_copy_(1, self.seqlen, k)
        self.v.index_copy_(1, self.seqlen, v)
        return self.k, self.v, None

    def reset(self) -> None:
        super().reset()
        for t in (*self.conv_state.values(), *self.ssm_state.values()):
            t.zero_()

    # ----- sizes
    def kv_bytes_per_token(self) -> int:
        """Bytes of the shared K and V one token of one sequence adds."""
        return 2 * self.k[0, 0].numel() * self.k.element_size()

    def ring_bytes_per_sequence(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in (*self.ring_k.values(), *self.ring_v.values()))

    def recurrent_bytes_per_sequence(self) -> int:
        """Mamba conv and SSM state of one sequence."""
        return sum(t[0].numel() * t.element_size() for t in (*self.conv_state.values(), *self.ssm_state.values()))

    def nbytes_per_sequence(self, seq_len: int | None = None) -> int:
        """Bytes of state one sequence of ``seq_len`` tokens (default: max_seq_len) needs."""
        seq_len = self.max_seq_len if seq_len is None else seq_len
        return seq_len * self.kv_bytes_per_token() + self.ring_bytes_per_sequence() + self.recurrent_bytes_per_sequence()


class DenseCache(CacheBase):
    """K/V of every layer of the dense :class:`~sambay.phi4mini.Phi4MiniForCausalLM`: one
    (B, max_seq_len, G, D) tensor per layer for K and for V, slot s holding position s. ``kv`` is
    the eager path (T new tokens), ``rotary_kv_step`` the graph-capturable one-token path."""

    def __init__(self, config: Phi4MiniConfig, batch_size: int, max_seq_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(batch_size, max_seq_len, device)
        shape = (batch_size, max_seq_len, config.num_key_value_heads, config.head_size)
        self.k = [torch.zeros(shape, device=self.device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=self.device, dtype=dtype) for _ in range(config.num_hidden_layers)]
        self._row_slot = torch.arange(batch_size, device=self.device) * max_seq_len  # row b's slot 0, caches as pools
        self._slots = torch.zeros(batch_size, dtype=torch.long, device=self.device)

    def kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Append new k, v (B, T, G, D) of a layer; return all its cached K/V."""
        end = self.length + k.shape[1]
        self.k[layer_idx][:, self.length:end] = k
        self.v[layer_idx][:, self.length:end] = v
        return self.k[layer_idx][:, :end], self.v[layer_idx][:, :end], None

    def rotary_kv_step(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cos: torch.Tensor,
                       sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        """One token: RoPE on q and k, k and v written at ``seqlen`` (one kernel on CUDA) ->
        (rotated q, all keys, all values, None)."""
        if layer_idx == 0:  # once per step: each row's flat slot at position seqlen
            torch.add(self._row_slot, self.seqlen, out=self._slots)
        q = rotary_store(q, k, v, cos, sin, self.k[layer_idx], self.v[layer_idx], self._slots)
        return q, self.k[layer_idx], self.v[layer_idx], None

    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V, all layers, one token of one sequence."""
        return sum(2 * t[0, 0].numel() * t.element_size() for t in self.k)

    def nbytes_per_sequence(self, seq_len: int | None = None) -> int:
        seq_len = self.max_seq_len if seq_len is None else seq_len
        return seq_len * self.kv_bytes_per_token()
