"""All inference state, paged: what grows with length lives in fixed-size blocks of one pool per
layer, what does not lives in per-slot buffers.

SambaY keeps (SAMBAY.md, "Inference state"):

* per self-decoder Mamba layer, per slot: a conv state (E, K-1) and an SSM state (E, N, fp32);
* per sliding-window layer, per slot: a ring of the last ``window`` keys/values (W, G, D);
* for the full-attention layer h+1 only: the one growing K/V, in a block pool
  (num_blocks, block_size, G, D), which every cross-attention layer reads;
* nothing for the GMU and cross-attention layers: the memory and the shared K/V are handed
  down the cross-decoder inside a forward call.

The dense Phi-4-mini baseline keeps a K/V block pool per layer (:class:`DenseCache`), 32 x 2 x 8 x
128 values per token for the official shape (16x SambaY's), and no per-slot state.

A forward call says where its tokens live with a :class:`CacheBatch` (per-slot rows, block
table, positions, pool slots to write). :class:`SequenceCache` is the simple user-facing form:
B sequences of equal length, each in its own run of blocks (``model.allocate_cache``); the
engine (``sambay/engine/``) builds CacheBatches itself, with a block table per request.
Block 0 of every pool is scratch: padding rows of a captured decode step write there.

``kv_cache_dtype="fp8"`` stores the paged K/V (what grows with length) in float8 e4m3 with one
float32 scale per (token, head), quantized as it is written (prefill and decode alike, so a
recomputed request reads what it first wrote); constant-size state stays in the model's dtype.
A float8 V pool is stored with a block's tokens contiguous (``layers.attention.tokens_contiguous``),
seen through the same (num_blocks, block_size, G, D) shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from layers.attention import gather_pages, paged_store

from .config import FULL, MAMBA, SLIDING, Phi4MiniConfig, SambaYConfig

SCRATCH_BLOCK = 0
KV_CACHE_DTYPES = ("auto", "fp8")  # auto: the model's dtype; fp8: float8 e4m3, one scale per (token, head)


def kv_pool_dtype(kv_cache_dtype: str | None, dtype: torch.dtype) -> torch.dtype:
    """The K/V pools' element type for ``kv_cache_dtype`` (None or "auto": the model's ``dtype``)."""
    if kv_cache_dtype in (None, "auto"):
        return dtype
    if kv_cache_dtype == "fp8":
        return torch.float8_e4m3fn
    raise ValueError(f"unknown kv_cache_dtype {kv_cache_dtype!r}; choose from {KV_CACHE_DTYPES}")


@dataclass
class CacheBatch:
    """Where the B rows of one forward call live.

    Prefill (``start`` set, a host int): every row continues after ``start`` cached tokens with T
    new ones at ``positions`` (T,) = start..start+T-1 (with ``lengths``, from start 0, row b's
    first ``lengths[b]``; the rest is padding). Decode (``start`` None): one token per row at
    ``positions`` (B,), device tensors only, so the call can be graph-captured. One per forward
    call: what its layers share (``shared``) is computed for it.
    """

    first_slot: int  # the rows use per-slot state first_slot .. first_slot + B - 1
    block_table: torch.Tensor  # (B, n) int32 block ids, position p in block_table[b, p // block_size]
    positions: torch.Tensor  # (T,) prefill, (B,) decode; int64
    write_slots: torch.Tensor  # flat pool slots (block * block_size + offset) of the new tokens: (B*T,) / (B,)
    long: torch.Tensor  # (B,) bool: LongRoPE long factors per row (dense model)
    start: int | None = None
    # Prefill from start 0 of rows of different lengths, right-padded to T: (B,) real tokens per row
    # (their pads are written to the scratch block and never read back); None: every row has T.
    lengths: torch.Tensor | None = None
    # What every layer of the call computes alike from the positions, computed by the first
    # (a decode step's sliding-window ring slots: a few small kernels each, saved in all but one layer)
    # (not an __init__ argument: dataclasses.replace gives the copy an empty one)
    shared: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def decode(self) -> bool:
        return self.start is None

    @property
    def rows(self) -> int:
        return self.block_table.shape[0]

    def slots(self) -> slice:
        return slice(self.first_slot, self.first_slot + self.rows)


class PagedCache:
    """Block pools and per-slot buffers of one model; sizes for the memory accounting."""

    def __init__(self, num_blocks: int, block_size: int, num_slots: int, device: torch.device | str | None,
                 dtype: torch.dtype, kv_cache_dtype: str | None) -> None:
        if num_blocks < 2 or block_size < 1 or num_slots < 1:
            raise ValueError(f"a cache needs num_blocks >= 2 (block 0 is scratch), block_size >= 1 and num_slots "
                             f">= 1, got {num_blocks}, {block_size}, {num_slots}")
        self.num_blocks, self.block_size, self.num_slots = num_blocks, block_size, num_slots
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.kv_dtype = kv_pool_dtype(kv_cache_dtype, dtype)
        self.k_pool: dict[int, torch.Tensor] = {}
        self.v_pool: dict[int, torch.Tensor] = {}
        self.k_scale: dict[int, torch.Tensor] = {}  # fp8 pools only: (num_blocks, block_size, G) float32
        self.v_scale: dict[int, torch.Tensor] = {}

    @property
    def fp8(self) -> bool:
        return self.kv_dtype == torch.float8_e4m3fn

    def _add_pool(self, layer_idx: int, G: int, D: int) -> None:
        shape = (self.num_blocks, self.block_size, G, D)
        self.k_pool[layer_idx] = torch.zeros(shape, device=self.device, dtype=self.kv_dtype)
        if self.fp8:  # V with a block's tokens contiguous, as layers.attention.tokens_contiguous lays them out
            v = torch.zeros(self.num_blocks, G, D, self.block_size, device=self.device, dtype=self.kv_dtype)
            self.v_pool[layer_idx] = v.permute(0, 3, 1, 2)
            self.k_scale[layer_idx] = torch.ones(shape[:3], device=self.device)
            self.v_scale[layer_idx] = torch.ones(shape[:3], device=self.device)
        else:
            self.v_pool[layer_idx] = torch.zeros(shape, device=self.device, dtype=self.kv_dtype)

    def pools(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """A paged layer's K pool, V pool and their scales (None unless fp8)."""
        return (self.k_pool[layer_idx], self.v_pool[layer_idx], self.k_scale.get(layer_idx),
                self.v_scale.get(layer_idx))

    def slot_state(self) -> list[torch.Tensor]:
        """The per-slot buffers (first dimension: slot)."""
        return []

    def move_slot(self, src: int, dst: int) -> None:
        """Copy the constant-size state of slot ``src`` into slot ``dst``."""
        for t in self.slot_state():
            t[dst].copy_(t[src])

    def gather(self, layer_idx: int, batch: CacheBatch, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of positions 0..end-1 of every row, in order: (B, end, G, D) each."""
        n = -(-end // self.block_size)
        table = batch.block_table[:, :n]
        k_pool, v_pool, k_scale, v_scale = self.pools(layer_idx)
        k, v = gather_pages(k_pool, table, None, k_scale)[:, :end], gather_pages(v_pool, table, None, v_scale)[:, :end]
        return k.to(self.dtype), v.to(self.dtype)

    def store(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor, batch: CacheBatch) -> None:
        k_pool, v_pool, k_scale, v_scale = self.pools(layer_idx)
        paged_store(k, v, k_pool, v_pool, batch.write_slots, k_scale, v_scale)

    # ----- sizes
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V (and their fp8 scales), all paged layers, one token of one sequence."""
        pools = [*self.k_pool.values(), *self.v_pool.values(), *self.k_scale.values(), *self.v_scale.values()]
        return sum(t[0, 0].numel() * t.element_size() for t in pools)

    def block_bytes(self) -> int:
        return self.block_size * self.kv_bytes_per_token()

    def slot_bytes(self) -> int:
        """Bytes of constant-size state one sequence holds (its slot)."""
        return sum(t[0].numel() * t.element_size() for t in self.slot_state())

    def nbytes_per_sequence(self, seq_len: int) -> int:
        """Bytes of state one sequence of ``seq_len`` tokens needs (whole blocks not counted)."""
        return seq_len * self.kv_bytes_per_token() + self.slot_bytes()


class SambaYCache(PagedCache):
    """Inference state of a :class:`~sambay.model.SambaYForCausalLM` (see the module docstring).

    Every layer's state is a tensor of its own (keyed by layer index), never a view into a
    stacked buffer: in-place updates of views would make a compiled step copy the whole stack.
    """

    def __init__(self, config: SambaYConfig, num_blocks: int, block_size: int, num_slots: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 kv_cache_dtype: str | None = None) -> None:
        super().__init__(num_blocks, block_size, num_slots, device, dtype, kv_cache_dtype)
        S, E, N, K = num_slots, config.d_inner, config.mamba_d_state, config.mamba_d_conv
        G, D, W = config.num_key_value_heads, config.head_dim, config.window
        kinds = config.layer_types
        dev = self.device
        self.window = W
        self.kv_layer = config.kv_layer
        assert kinds[config.kv_layer] == FULL
        mamba = [i for i, k in enumerate(kinds) if k == MAMBA]
        sliding = [i for i, k in enumerate(kinds) if k == SLIDING]
        self.conv_state = {i: torch.zeros(S, E, K - 1, device=dev, dtype=dtype) for i in mamba}
        self.ssm_state = {i: torch.zeros(S, E, N, device=dev, dtype=torch.float32) for i in mamba}
        # Ring of the last W tokens: position p lives in ring slot p % W.
        self.ring_k = {i: torch.zeros(S, W, G, D, device=dev, dtype=dtype) for i in sliding}
        self.ring_v = {i: torch.zeros(S, W, G, D, device=dev, dtype=dtype) for i in sliding}
        self._ring_slots = torch.arange(W, device=dev)
        self._add_pool(config.kv_layer, G, D)

    def slot_state(self) -> list[torch.Tensor]:
        return [*self.conv_state.values(), *self.ssm_state.values(), *self.ring_k.values(), *self.ring_v.values()]

    def mamba_state(self, layer_idx: int, batch: CacheBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows' conv and SSM state: views, updated in place."""
        return self.conv_state[layer_idx][batch.slots()], self.ssm_state[layer_idx][batch.slots()]

    def sliding_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor,
                   batch: CacheBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prefill: keys/values a sliding layer attends to for new k, v (B, T, G, D): the ring's tokens
        in position order, then the new ones. The last ``window`` new tokens then go into the ring."""
        ring_k, ring_v = self.ring_k[layer_idx][batch.slots()], self.ring_v[layer_idx][batch.slots()]
        W, past, positions = self.window, batch.start, batch.positions
        if past == 0:
            keys, values, k_pos = k, v, positions
        else:
            old = torch.arange(past - W, past, device=self.device)  # negative: never written
            keys = torch.cat([ring_k[:, old % W], k], dim=1)
            values = torch.cat([ring_v[:, old % W], v], dim=1)
            k_pos = torch.cat([old, positions])
        if batch.lengths is None:
            slots = positions[-W:] % W
            ring_k.index_copy_(1, slots, k[:, -W:])
            ring_v.index_copy_(1, slots, v[:, -W:])
        else:  # each row's own last W tokens (from start 0: ring slots of negative positions stay unread)
            t = batch.lengths[:, None] - W + self._ring_slots  # (B, W) token index = position
            rows = torch.arange(t.shape[0], device=t.device)[:, None]
            ring_k[rows, t % W] = k[rows, t.clamp(min=0)]
            ring_v[rows, t % W] = v[rows, t.clamp(min=0)]
        return keys, values, k_pos

    def ring(self, layer_idx: int, batch: CacheBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                               torch.Tensor]:
        """Decode: a sliding layer's rings (B, W, G, D), the rows (B,) and ring slots (B,) their new
        k, v go to (:meth:`layers.attention.DiffAttention.project` writes them), and the position
        each ring slot holds per row after the write (B, W) (negative: empty)."""
        ring_k, ring_v = self.ring_k[layer_idx][batch.slots()], self.ring_v[layer_idx][batch.slots()]
        key = ("ring", self.window)
        if key not in batch.shared:  # the same for every sliding layer of the call
            pos = batch.positions  # (B,)
            rows = torch.arange(pos.shape[0], device=pos.device)
            k_pos = pos[:, None] - (pos[:, None] - self._ring_slots) % self.window
            batch.shared[key] = (rows, pos % self.window, k_pos)
        rows, at, k_pos = batch.shared[key]
        return ring_k, ring_v, rows, at, k_pos

    def shared_kv(self, k: torch.Tensor, v: torch.Tensor, batch: CacheBatch) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Prefill: write layer h+1's new k, v (B, T, G, D); return all its K/V (slot s = position s)."""
        self.store(self.kv_layer, k, v, batch)
        return (*self.gather(self.kv_layer, batch, batch.start + k.shape[1]), None)

    def shared_pools(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The shared K/V pools and their scales (None unless fp8)."""
        return self.pools(self.kv_layer)

    def ring_bytes_per_sequence(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in (*self.ring_k.values(), *self.ring_v.values()))

    def recurrent_bytes_per_sequence(self) -> int:
        """Mamba conv and SSM state of one sequence."""
        return sum(t[0].numel() * t.element_size() for t in (*self.conv_state.values(), *self.ssm_state.values()))


class DenseCache(PagedCache):
    """K/V block pools of every layer of the dense :class:`~sambay.phi4mini.Phi4MiniForCausalLM`."""

    def __init__(self, config: Phi4MiniConfig, num_blocks: int, block_size: int, num_slots: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 kv_cache_dtype: str | None = None) -> None:
        super().__init__(num_blocks, block_size, num_slots, device, dtype, kv_cache_dtype)
        for i in range(config.num_hidden_layers):
            self._add_pool(i, config.num_key_value_heads, config.head_size)

    def kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor,
           batch: CacheBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill: write a layer's new k, v (B, T, G, D); return all its K/V (slot s = position s)."""
        self.store(layer_idx, k, v, batch)
        return self.gather(layer_idx, batch, batch.start + k.shape[1])


def contiguous_batch(cache: PagedCache, batch_size: int, max_seq_len: int, start: int, T: int, long: bool,
                     decode: bool = False) -> CacheBatch:
    """The CacheBatch of rows 0..B-1 laid out one after another: row b owns blocks
    1 + b * n .. (b + 1) * n (block 0 is scratch), T new tokens after ``start`` (``decode``: one
    token per row, per-row positions)."""
    n = -(-max_seq_len // cache.block_size)
    dev = cache.device
    table = (1 + torch.arange(batch_size * n, device=dev, dtype=torch.int32)).view(batch_size, n)
    positions = torch.arange(start, start + T, device=dev)
    write = table.long()[:, positions // cache.block_size] * cache.block_size + positions % cache.block_size
    long_rows = torch.full((batch_size,), long, device=dev)
    if decode:
        return CacheBatch(0, table, positions.expand(batch_size).contiguous(), write[:, 0], long_rows)
    return CacheBatch(0, table, positions, write.reshape(-1), long_rows, start)


class SequenceCache:
    """The simple cached path of ``model(ids, cache=...)``: ``batch_size`` sequences of equal length,
    up to ``max_seq_len`` tokens each, every call appending the same number of tokens to all (one
    token after the first call is a decode step). Rows of different lengths, admission and
    preemption are the engine's (``sambay.generate.Engine``).

    ``long``: the dense model's LongRoPE list, decided once from ``max_seq_len`` (the length budget).
    """

    def __init__(self, cache: PagedCache, batch_size: int, max_seq_len: int, long: bool) -> None:
        self.cache, self.batch_size, self.max_seq_len, self.long = cache, batch_size, max_seq_len, long
        self.length = 0

    def batch(self, batch_size: int, T: int) -> CacheBatch:
        """Where the next call's T tokens go."""
        if batch_size != self.batch_size:
            raise ValueError(f"input batch size {batch_size} does not match the cache's {self.batch_size}")
        if self.length + T > self.max_seq_len:
            raise ValueError(f"{self.length} cached + {T} new tokens exceed the cache's max_seq_len of "
                             f"{self.max_seq_len}")
        return contiguous_batch(self.cache, batch_size, self.max_seq_len, self.length, T, self.long,
                                decode=T == 1 and self.length > 0)

    def advance(self, T: int) -> None:
        self.length += T
