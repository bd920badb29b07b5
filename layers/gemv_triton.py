"""Matrix-vector products for one-token decoding, in Triton.

At batch 1 a decode step is a chain of matrix-vector products whose cost is reading the weights
once, so the goal here is streaming them at full memory bandwidth, and leaving as little else
as possible between them: every small kernel in the chain costs a few microseconds of launch,
ramp-up and tail. So the block's norm and residual add travel with its projections:

- each program owns ``BLOCK_N`` output rows, walks along K reading ``BLOCK_N x BLOCK_K`` tiles
  (contiguous rows of the (N, K) weight), accumulates in fp32 and reduces once at the end;
- ``norm`` (prologue): the input is first normalized by a LayerNorm or RMSNorm; every program
  computes the row's statistics itself (K floats from L2) rather than waiting for a kernel that
  does it once;
- ``glu``: the weight holds the gate rows then the up rows, and each program reads row i of both
  and writes ``silu(g_i) * u_i`` (the gated-SiLU MLP);
- ``gate`` (epilogue): ``silu(out) * gate`` (the GMU);
- ``residual`` (epilogue): ``residual + out``, in the residual's dtype;
- fp8 weights (:mod:`layers.quant`): the tiles are read as float8 e4m3 (half the bytes) and widened
  in registers; a row's scale factors out of its dot product and is applied once, in the epilogue,
  before the bias, glu, gate and residual. The layer's dtype is then the scales' dtype. Widening to
  fp32 costs two conversions per weight, which bound the lm_head's GEMV on the H200 (2.3 TB/s): a
  config may instead multiply and sum the tiles in f16 (``F16``, one conversion per two weights;
  see :func:`gemv`), which the tune sweep tries behind a norm;
- on Hopper each launch is a programmatic dependent launch: the kernel's programs are placed
  while the previous kernel drains, request their first weight tile (which depends on nothing),
  and wait (``griddepcontrol.wait``) before reading the input.

:func:`chain` is Mamba's x_proj then dt_proj (192 x 5120, then 5120 x 160 on the first 160
outputs): x_proj's 192 rows give too few programs to stream at full bandwidth, so its pass also
splits K (``SPLIT_K`` programs per row block, each writing an fp32 partial row), and dt_proj's
GEMV adds the partial rows as it reads its input (its first program also writes x_proj's output
for the scan). Still two launches; the tile sweep picks the split (1 = no split).

Tiles are (BLOCK_N, BLOCK_K, num_warps, SPLIT_K) per shape, fusion and weight format, looked up in
the tiles swept on this machine (a JSON file per device name, :func:`cache_path`), the device's
built-in table, the H100's table, then a fallback rule (:func:`gemv_config`). :func:`tune` sweeps,
eagerly: never inside a CUDA-graph capture or a compile trace (the engine's graphs capture whatever
tiles the table gives; a call there never sweeps). ``SAMBAY_GEMV_TUNE=1`` sweeps a missing shape
on its first eager call.

Intermediates are rounded to the layer's dtype where the unfused torch path rounds them, so the
result is that path's up to the order of the fp32 sums and the compiler's fused multiply-adds
(``tests/test_gpu.py`` and ``tests/test_gpu_fp8.py`` bound the difference). Reference twins:
:func:`layers.linear.linear_ref`, :func:`layers.linear.linear_chain_ref`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import triton
import triton.language as tl

try:  # programmatic dependent launch came with Triton 3.3
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # the kernels only reach these names when PDL is on
    gdc_launch_dependents = gdc_wait = None

from . import environment
from .norm import NO_NORM, RMS_NORM

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _silu_rounded(v, dtype: tl.constexpr):
    """silu of ``v`` rounded to ``dtype`` first, the result rounded again (torch's F.silu on a tensor of ``dtype``)."""
    v = v.to(dtype).to(tl.float32)
    return (v / (1.0 + tl.exp(-v))).to(dtype).to(tl.float32)


@triton.jit
def _products(w, x, F16: tl.constexpr):
    """w (BLOCK_N, BLOCK_K) times the input tile x (BLOCK_K,) fp32, elementwise: in fp32, or with
    ``F16`` (e4m3 weights) in f16 of the weights times 2**-8 (exact: e4m3 is at most 448): e4m3 ->
    fp32 is two conversions per value, a throughput the lm_head's GEMV is bound by, e4m3 -> f16 one
    per two values. The caller multiplies the sum by 2**8."""
    if F16:  # one return: the compiler wants one return type (the interpreter does not check)
        p = (w.to(tl.float16) * tl.full((1, 1), 0.00390625, tl.float16)) * x.to(tl.float16)[None, :]
    else:
        p = w.to(tl.float32) * x[None, :]
    return p


@triton.jit
def _weight_tile(w_ptrs, up_ptrs, k, rows, kmask, N, GLU: tl.constexpr, EVEN: tl.constexpr):
    if EVEN:
        w = tl.load(w_ptrs + k)
        u = tl.load(up_ptrs + k) if GLU else w
    else:
        mask = (rows[:, None] < N) & kmask[None, :]
        w = tl.load(w_ptrs + k, mask=mask, other=0.0)
        u = tl.load(up_ptrs + k, mask=mask, other=0.0) if GLU else w
    return w, u


@triton.jit
def _input_tile(X, NORM_W, NORM_B, k, cols, kmask, mean, rstd, wdt: tl.constexpr, NORM: tl.constexpr,
                NORM_BIAS: tl.constexpr, X_PARTS: tl.constexpr, X_STRIDE: tl.constexpr):
    """x[k : k + BLOCK_K] in fp32, cast to the layer's dtype and normalized as the norm module does
    (``X_PARTS`` > 0: x is the sum of that many fp32 partial rows ``X_STRIDE`` apart, rounded once)."""
    if X_PARTS > 0:
        x = tl.load(X + k + cols, mask=kmask, other=0.0)
        for s in tl.static_range(1, X_PARTS):
            x += tl.load(X + s * X_STRIDE + k + cols, mask=kmask, other=0.0)
        x = x.to(wdt).to(tl.float32)
    else:
        x = tl.load(X + k + cols, mask=kmask, other=0.0).to(wdt).to(tl.float32)
    if NORM == 1:  # torch's LayerNorm: one rounding, after the affine map
        x = (x - mean) * rstd * tl.load(NORM_W + k + cols, mask=kmask, other=0.0).to(tl.float32)
        if NORM_BIAS:
            x += tl.load(NORM_B + k + cols, mask=kmask, other=0.0).to(tl.float32)
        x = x.to(wdt).to(tl.float32)
    elif NORM == 2:  # layers.norm.RMSNorm: rounded before and after the weight
        x = (x * rstd).to(wdt).to(tl.float32) * tl.load(NORM_W + k + cols, mask=kmask, other=0.0).to(tl.float32)
        x = x.to(wdt).to(tl.float32)
    return x


@triton.jit
def _conv_step(out, rows, rmask, CONV_W, CONV_B, CONV_STATE, CONV_ROWS, wdt: tl.constexpr, CONV: tl.constexpr,
               CONV_BIAS: tl.constexpr, CONV_P2: tl.constexpr):
    """Mamba's depthwise causal conv, one token, on output rows below CONV_ROWS (in_proj's x half; the z
    rows pass): ``silu(w . [state, x] + b)``, the row's state (its last CONV - 1 inputs, the layer's
    dtype) shifted in place. Each row is one program's, so no other program touches its state."""
    v = out.to(wdt).to(tl.float32)  # x_in, rounded as the unfused path stores it
    cm = rmask & (rows < CONV_ROWS)
    taps = tl.arange(0, CONV_P2)
    tm = cm[:, None] & (taps[None, :] < CONV - 1)
    state = CONV_STATE + rows[:, None].to(tl.int64) * (CONV - 1) + taps[None, :]
    old = tl.load(state, mask=tm, other=0.0)
    later = tl.load(state + 1, mask=tm & (taps[None, :] < CONV - 2), other=0.0)  # the state shifted by one
    w = tl.load(CONV_W + rows[:, None] * CONV + taps[None, :], mask=tm, other=0.0).to(tl.float32)
    c = tl.sum(old.to(tl.float32) * w, axis=1) + v * tl.load(CONV_W + rows * CONV + CONV - 1, mask=cm, other=0.0).to(tl.float32)
    if CONV_BIAS:
        c += tl.load(CONV_B + rows, mask=cm, other=0.0).to(tl.float32)
    tl.debug_barrier()  # the program's threads have all read the state before any of them writes it
    new = tl.where(taps[None, :] == CONV - 2, v[:, None], later.to(tl.float32))
    tl.store(state, new.to(CONV_STATE.dtype.element_ty), mask=tm)
    return tl.where(rows < CONV_ROWS, c / (1.0 + tl.exp(-c)), out)


@triton.jit
def _gemv(X, W, SCALE, BIAS, OUT, NORM_W, NORM_B, GATE, RES, X_OUT, CONV_W, CONV_B, CONV_STATE, RING_K, RING_V, RING_AT,
          N, eps, CONV_ROWS, RING_FROM, RING_WIDTH,
          K: tl.constexpr, HAS_BIAS: tl.constexpr, GLU: tl.constexpr, NORM: tl.constexpr, NORM_BIAS: tl.constexpr,
          GATED: tl.constexpr, RESIDUAL: tl.constexpr, EVEN: tl.constexpr, FP8: tl.constexpr,
          SPLIT_K: tl.constexpr, X_PARTS: tl.constexpr, X_STRIDE: tl.constexpr,
          BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, F16: tl.constexpr, PDL: tl.constexpr,
          CONV: tl.constexpr = 0, CONV_BIAS: tl.constexpr = False, CONV_P2: tl.constexpr = 1,
          RING: tl.constexpr = False):
    # The layer's dtype: the scales' for an fp8 weight; without scales SCALE is the weight itself.
    wdt: tl.constexpr = SCALE.dtype.element_ty
    # K_SPLIT columns per program along axis 1 (all of K without a split), a whole number of tiles.
    K_SPLIT: tl.constexpr = (K + SPLIT_K * BLOCK_K - 1) // (SPLIT_K * BLOCK_K) * BLOCK_K
    k0 = tl.program_id(1) * K_SPLIT
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_K)
    w_ptrs = W + rows[:, None].to(tl.int64) * K + cols[None, :]
    up_ptrs = w_ptrs + N.to(tl.int64) * K  # GLU: row i of the up half
    # The first weight tile is requested before anything else (it depends on no earlier kernel),
    # so memory is busy while the program waits for its input and computes the norm statistics.
    kmask = k0 + cols < K
    w, u = _weight_tile(w_ptrs, up_ptrs, k0, rows, kmask, N, GLU, EVEN)
    if PDL:
        gdc_launch_dependents()
        gdc_wait()  # the input is the previous kernel's output
    mean = 0.0
    rstd = 1.0
    if NORM != 0:  # statistics of x cast to the layer's dtype, in fp32; shifted sums keep the variance exact
        shift = 0.0
        if NORM == 1:
            shift = tl.load(X).to(wdt).to(tl.float32)
        s1 = tl.zeros((BLOCK_K,), tl.float32)
        s2 = tl.zeros((BLOCK_K,), tl.float32)
        for k in range(0, K, BLOCK_K):
            m = k + cols < K
            d = tl.where(m, tl.load(X + k + cols, mask=m, other=0.0).to(wdt).to(tl.float32) - shift, 0.0)
            s1 += d
            s2 += d * d
        t1 = tl.sum(s1, 0)
        if NORM == 1:
            mean = shift + t1 / K
            rstd = tl.rsqrt((tl.sum(s2, 0) - t1 * t1 / K) / K + eps)
        else:
            rstd = tl.rsqrt(tl.sum(s2, 0) / K + eps)
    if X_PARTS > 0:  # the partial rows are summed once, by the first program, for whoever reads them next
        if tl.program_id(0) == 0:
            for c in range(0, X_STRIDE, BLOCK_K):
                cm = c + cols < X_STRIDE
                xs = _input_tile(X, NORM_W, NORM_B, c, cols, cm, mean, rstd, wdt, 0, False, X_PARTS, X_STRIDE)
                tl.store(X_OUT + c + cols, xs.to(X_OUT.dtype.element_ty), mask=cm)
    x = _input_tile(X, NORM_W, NORM_B, k0, cols, kmask, mean, rstd, wdt, NORM, NORM_BIAS, X_PARTS, X_STRIDE)
    acc = _products(w, x, F16)
    acc_up = _products(u, x, F16)
    for i in range(1, K_SPLIT // BLOCK_K):  # a static trip count the compiler pipelines
        k = k0 + i * BLOCK_K
        kmask = k + cols < K
        w, u = _weight_tile(w_ptrs, up_ptrs, k, rows, kmask, N, GLU, EVEN)
        x = _input_tile(X, NORM_W, NORM_B, k, cols, kmask, mean, rstd, wdt, NORM, NORM_BIAS, X_PARTS, X_STRIDE)
        acc += _products(w, x, F16)
        if GLU:
            acc_up += _products(u, x, F16)
    rmask = rows < N
    out = tl.sum(acc.to(tl.float32), axis=1)
    if F16:
        out *= 256.0
    if FP8:  # the row's scale factors out of its dot product
        out *= tl.load(SCALE + rows, mask=rmask, other=0.0).to(tl.float32)
    if SPLIT_K > 1:  # a partial row of fp32 sums; the reader adds the splits (and has no epilogue here)
        tl.store(OUT + tl.program_id(1) * N + rows, out, mask=rmask)
    else:
        if HAS_BIAS:
            out += tl.load(BIAS + rows, mask=rmask, other=0.0).to(tl.float32)
        if CONV > 0:
            out = _conv_step(out, rows, rmask, CONV_W, CONV_B, CONV_STATE, CONV_ROWS, wdt, CONV, CONV_BIAS, CONV_P2)
        if GLU:
            up = tl.sum(acc_up.to(tl.float32), axis=1)
            if F16:
                up *= 256.0
            if FP8:
                up *= tl.load(SCALE + N + rows, mask=rmask, other=0.0).to(tl.float32)
            if HAS_BIAS:
                up += tl.load(BIAS + N + rows, mask=rmask, other=0.0).to(tl.float32)
            # Round the two products as the unfused path does before the activation.
            out = _silu_rounded(out, wdt) * up.to(wdt).to(tl.float32)
        if GATED:
            out = _silu_rounded(out, wdt) * tl.load(GATE + rows, mask=rmask, other=0.0).to(tl.float32)
        if RESIDUAL:
            out = tl.load(RES + rows, mask=rmask, other=0.0).to(tl.float32) + out.to(wdt).to(tl.float32)
        out = out.to(OUT.dtype.element_ty)
        tl.store(OUT + rows, out, mask=rmask)
        if RING:  # rows RING_FROM + [0, M) are k, the next M are v: also into the rings' slot RING_AT
            at = tl.load(RING_AT).to(tl.int64) * RING_WIDTH
            j = rows - RING_FROM
            tl.store(RING_K + at + j, out, mask=rmask & (j >= 0) & (j < RING_WIDTH))
            tl.store(RING_V + at + j - RING_WIDTH, out, mask=rmask & (j >= RING_WIDTH) & (j < 2 * RING_WIDTH))


# ----------------------------------------------------------------------------- tile tables
#
# A config is (BLOCK_N, BLOCK_K, num_warps, SPLIT_K, F16) (F16: see `gemv`); a key is (output rows,
# K, glu, norm, fp8, kind) with kind "gemv" (one launch, its epilogue whatever it is: the tiles do not depend on it) or
# "split" (the first half of linear_chain: a split-K pass whose partial rows the second GEMV adds).
# Lookup order (gemv_config): the tiles swept on this machine (the cache file, see `cache_path`),
# then the built-in table of this device's name (TUNED_BY_DEVICE), then TUNED (the H100's, for
# any device), then the fallback rule.

# (BLOCK_N, BLOCK_K, num_warps) for the official bf16 weights, keyed by (output rows, K, glu, norm):
# the best of a sweep on an H100 (then ``examples/bench_gemv.py --sweep``, each shape with the fusion
# it has in the model). Gains over the fallback below reach 2 us on the small projections. For fp8
# weights the same entry with twice the BLOCK_K (the same bytes per tile) is the starting guess.
TUNED = {
    (10240, 2560, False, True): (8, 512, 4),  # SambaY mamba in_proj
    (192, 5120, False, False): (4, 1024, 8),  # SambaY mamba x_proj
    (5120, 160, False, False): (8, 256, 8),  # SambaY mamba dt_proj
    (2560, 5120, False, False): (2, 1024, 4),  # SambaY mamba / GMU out_proj
    (5120, 2560, False, True): (8, 512, 4),  # SambaY attention Wqkv, GMU in_proj
    (2560, 2560, False, False): (2, 1024, 4),  # SambaY attention out_proj
    (2560, 2560, False, True): (8, 512, 4),  # SambaY cross-attention Wqkv
    (10240, 2560, True, True): (8, 256, 4),  # SambaY MLP fc1
    (2560, 10240, False, False): (8, 1024, 8),  # SambaY MLP fc2
    (200064, 2560, False, True): (4, 512, 4),  # SambaY lm_head
    (5120, 3072, False, True): (4, 1024, 8),  # dense qkv_proj
    (3072, 3072, False, False): (4, 1024, 4),  # dense o_proj
    (8192, 3072, True, True): (2, 1024, 4),  # dense gate_up_proj
    (3072, 8192, False, False): (8, 1024, 8),  # dense down_proj
    (200064, 3072, False, True): (2, 1024, 8),  # dense lm_head
}

# Tables swept on a named device (torch.cuda.get_device_name), in the cache file's format:
# "N,K,glu,norm,fp8,kind" -> [BLOCK_N, BLOCK_K, num_warps, SPLIT_K(, F16)].
# `examples/bench_gemv.py --tune` prints one to paste here.
TUNED_BY_DEVICE: dict[str, dict[str, list[int]]] = {
    "NVIDIA H200": {  # examples/bench_gemv.py --tune, 2026-12-01, Triton 3.6.0
        "10240,2560,0,1,0,gemv": [8, 512, 4, 1],
        "10240,2560,0,1,1,gemv": [8, 1024, 4, 1],
        "10240,2560,1,1,0,gemv": [4, 512, 4, 1],
        "10240,2560,1,1,1,gemv": [8, 512, 4, 1],
        "192,5120,0,0,0,gemv": [1, 1024, 4, 1],
        "192,5120,0,0,0,split": [2, 512, 4, 8],
        "192,5120,0,0,1,gemv": [1, 1024, 8, 1],
        "192,5120,0,0,1,split": [4, 512, 4, 8],
        "200064,2560,0,1,0,gemv": [8, 512, 4, 1],
        "200064,2560,0,1,1,gemv": [8, 1024, 4, 1],
        "200064,3072,0,1,0,gemv": [4, 1024, 4, 1],
        "200064,3072,0,1,1,gemv": [8, 1024, 4, 1],
        "2560,10240,0,0,0,gemv": [1, 512, 8, 1],
        "2560,10240,0,0,1,gemv": [2, 1024, 4, 1],
        "2560,2560,0,0,0,gemv": [4, 1024, 4, 1],
        "2560,2560,0,0,1,gemv": [4, 2048, 4, 1],
        "2560,2560,0,1,0,gemv": [4, 512, 8, 1],
        "2560,2560,0,1,1,gemv": [4, 1024, 4, 1],
        "2560,5120,0,0,0,gemv": [1, 512, 8, 1],
        "2560,5120,0,0,1,gemv": [4, 1024, 4, 1],
        "3072,3072,0,0,0,gemv": [8, 1024, 4, 1],
        "3072,3072,0,0,1,gemv": [8, 1024, 4, 1],
        "3072,8192,0,0,0,gemv": [2, 1024, 4, 1],
        "3072,8192,0,0,1,gemv": [4, 2048, 8, 1],
        "5120,160,0,0,0,gemv": [8, 256, 8, 1],
        "5120,160,0,0,1,gemv": [8, 256, 4, 1],
        "5120,2560,0,1,0,gemv": [8, 512, 4, 1],
        "5120,2560,0,1,1,gemv": [4, 1024, 4, 1],
        "5120,3072,0,1,0,gemv": [4, 1024, 4, 1],
        "5120,3072,0,1,1,gemv": [4, 1024, 4, 1],
        "8192,3072,1,1,0,gemv": [4, 1024, 4, 1],
        "8192,3072,1,1,1,gemv": [4, 1024, 4, 1],
    },
}

Key = tuple[int, int, bool, bool, bool, str]
Config = tuple[int, int, int, int, int]


def key_text(key: Key) -> str:
    n, k, glu, norm, fp8, kind = key
    return f"{n},{k},{int(glu)},{int(norm)},{int(fp8)},{kind}"


def cache_path(device_name: str) -> Path | None:
    """The swept-tiles file of a device: ``$SAMBAY_GEMV_CACHE`` (``off``: none), else
    ``~/.cache/sambay/gemv-<device name>.json``."""
    env = environment.read("SAMBAY_GEMV_CACHE")
    if env is not None:
        return None if env.lower() in ("", "off", "0", "none") else Path(env).expanduser()
    return Path.home() / ".cache" / "sambay" / f"gemv-{re.sub(r'[^A-Za-z0-9._-]+', '_', device_name)}.json"


_swept: dict[str, dict[str, list[int]]] = {}  # device name -> the cache file's table, read once


def _swept_table(device_name: str) -> dict[str, list[int]]:
    if device_name not in _swept:
        path = cache_path(device_name)
        table: dict[str, list[int]] = {}
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
                if data.get("device") == device_name:
                    table = dict(data["tiles"])
            except (ValueError, KeyError, TypeError, AttributeError):  # unreadable: sweep again, rewrite it
                table = {}
        _swept[device_name] = table
    return _swept[device_name]


def _save_swept(device_name: str) -> None:
    path = cache_path(device_name)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"device": device_name, "triton": triton.__version__,
                               "tiles": dict(sorted(_swept[device_name].items()))}, indent=1) + "\n")
    tmp.replace(path)  # atomic: concurrent processes never read half a file


def fallback_config(key: Key) -> Config:
    """TUNED's entry for the shape (BLOCK_K doubled for fp8, still within K), else what the H100
    sweep found most often: two rows per program and tiles of 1024 (eight rows and tiles of 512
    with a norm, whose statistics every program reads x once more for); a split pass splits K in 4."""
    n, k, glu, norm, fp8, kind = key
    if (n, k, glu, norm) in TUNED:
        block_n, block_k, warps = TUNED[n, k, glu, norm]
    else:
        block_n, block_k, warps = (8, 512, 4) if norm else (2, 1024, 4)
    if kind == "split":  # tiles of 512 leave four splits of the official x_proj (K = 5120) little waste
        block_k = min(block_k, 512)
    if fp8:
        block_k *= 2
    return block_n, min(block_k, triton.next_power_of_2(k)), warps, 4 if kind == "split" else 1, 0


_names: dict[int, str] = {}


def _device_name(device: torch.device | None) -> str:
    """The CUDA device's name (the current one for None), ``"cpu"`` for anything else (the interpreter)."""
    if device is not None and device.type != "cuda" or not torch.cuda.is_available():
        return "cpu"
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    if index not in _names:
        _names[index] = torch.cuda.get_device_name(index)
    return _names[index]


def gemv_config(n: int, k: int, glu: bool = False, norm: bool = False, fp8: bool = False, kind: str = "gemv",
                device: torch.device | None = None) -> Config:
    """(BLOCK_N, BLOCK_K, num_warps, SPLIT_K) for ``n`` output rows of a K-wide weight (see the
    lookup order above the tables)."""
    key = (n, k, glu, norm, fp8, kind)
    name = _device_name(device)
    text = key_text(key)
    found = _swept_table(name).get(text) or TUNED_BY_DEVICE.get(name, {}).get(text)
    if not found:
        return fallback_config(key)
    return (*found, 0)[:5]  # type: ignore[return-value]  # entries swept before F16 existed have four


def _capturing() -> bool:
    return torch.compiler.is_compiling() or (torch.cuda.is_available() and torch.cuda.is_current_stream_capturing())


_seen: set[tuple[Key, str]] = set()  # (key, device name) of every eager call: what `tune` sweeps by default


def _note(key: Key, device: torch.device) -> None:
    """Remember ``key``; with ``SAMBAY_GEMV_TUNE=1`` sweep it now if this device's cache lacks it and
    no CUDA graph is being captured nor a compile traced (where timing is impossible)."""
    if _capturing():
        return
    name = _device_name(device)
    if (key, name) not in _seen:
        _seen.add((key, name))
        if (name != "cpu" and environment.read("SAMBAY_GEMV_TUNE") == "1"
                and key_text(key) not in _swept_table(name)):
            tune([key], device)


def candidates(key: Key) -> list[Config]:
    """The sweep's grid for ``key`` (small: most of a sweep's time is compiling): 1-8 rows per
    program, tiles of 512 or 1024 elements (1024 or 2048 for fp8: the same bytes), 4 or 8 warps,
    plus the fallback config; for a split pass 2-8 rows, tiles of 256-512 (512-1024), 4 warps and
    1-8 splits of K. Tiles wider than K are cut to K."""
    n, k, glu, norm, fp8, kind = key
    wide = triton.next_power_of_2(k)
    if kind == "split":
        tiles = (512, 1024) if fp8 else (256, 512)
        grid = {(bn, min(bk, wide), 4, sk, 0) for bn in (2, 4, 8) for bk in tiles for sk in (1, 2, 4, 8)
                if sk == 1 or k >= sk * min(bk, wide)}
    else:
        tiles = (1024, 2048) if fp8 else (512, 1024)
        f16 = (0, 1) if fp8 and norm else (0,)  # normalized inputs only: see F16 in `gemv`
        grid = {(bn, min(bk, wide), nw, 1, h) for bn in (1, 2, 4, 8) for bk in tiles for nw in (4, 8) for h in f16}
    return sorted(grid | {fallback_config(key)})


def graph_seconds(fns: list, reps: int = 20) -> float:
    """Median seconds of one replay of a CUDA graph that runs ``fns`` in order."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for f in fns:
            f()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for f in fns:
            f()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / 1e3)
    del graph
    return sorted(times)[reps // 2]


def _sweep_inputs(key: Key, device: torch.device, dtype: torch.dtype, min_bytes: int):
    """Enough weight copies of ``key``'s shape (at least ``min_bytes`` and two) that the L2 cache
    holds none of them while a graph streams them, and a call for each."""
    from .quant import quantize_fp8

    n, k, glu, norm, fp8, kind = key
    rows = 2 * n if glu else n
    nbytes = rows * k * (1 if fp8 else dtype.itemsize)
    copies = max(2, -(-min_bytes // nbytes))
    weights = []
    for _ in range(copies):
        w = torch.randn(rows, k, device=device, dtype=dtype) * 0.02
        weights.append(quantize_fp8(w) if fp8 else (w, None))
    x = torch.randn(k, device=device, dtype=dtype)
    norm_args = (RMS_NORM, torch.ones(k, device=device, dtype=dtype), None, 1e-5) if norm else None
    if kind == "split":  # the split pass alone: its partial rows are what the second GEMV of chain() reads
        parts = torch.empty(16, n, device=device, dtype=torch.float32)

        def call(cfg, w, s):
            _launch(x, w, s, None, parts, None, None, None, None, n, k, False, *cfg[:4], 0, 0)
    else:
        def call(cfg, w, s):
            return gemv(x, w, None, glu, norm_args, scale=s, config=cfg)
    return weights, call


def tune(keys: list[Key] | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.bfloat16,
         min_bytes: int = 256 * 2**20) -> dict[str, tuple[Config, float]]:
    """Sweep each of ``keys`` (default: every shape the GEMVs ran on since import that this device's
    cache lacks) over :func:`candidates`, timing CUDA-graph replays over weight copies of at least
    ``min_bytes``; store the fastest in the cache file (:func:`cache_path`) and return ``{key text:
    (config, seconds)}``. Eager only: call it outside CUDA-graph capture and compile tracing (at
    model load or engine construction, before a cache takes the free memory). Seconds per shape."""
    if _capturing():
        raise RuntimeError("layers.gemv_triton.tune cannot run inside a CUDA-graph capture or a compile trace")
    device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    name = _device_name(device)
    table = _swept_table(name)
    if keys is None:
        keys = [key for key, dev in sorted(_seen) if dev == name and key_text(key) not in table]
    results = {}
    with torch.no_grad(), torch.cuda.device(device):
        for key in keys:
            weights, call = _sweep_inputs(key, device, dtype, min_bytes)
            best = None
            for cfg in candidates(key):
                seconds = graph_seconds([lambda w=w, s=s: call(cfg, w, s) for w, s in weights]) / len(weights)
                if best is None or seconds < best[1]:
                    best = (cfg, seconds)
            del weights
            table[key_text(key)] = list(best[0])
            results[key_text(key)] = best
            _save_swept(name)
    return results


# ----------------------------------------------------------------------------- launches


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, glu: bool = False,
         norm: tuple[int, torch.Tensor, torch.Tensor | None, float] | None = None,
         gate: torch.Tensor | None = None, residual: torch.Tensor | None = None,
         scale: torch.Tensor | None = None, config: tuple[int, ...] | None = None,
         conv: tuple[torch.Tensor, torch.Tensor | None, torch.Tensor] | None = None,
         ring: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None) -> torch.Tensor:
    """x (..., K) holding one row, weight (N, K) contiguous -> (..., N), or (..., N / 2) with ``glu``.

    ``norm = (LAYER_NORM or RMS_NORM, weight, bias, eps)`` normalizes x first (x may then be fp32);
    ``gate`` (N,) returns ``silu(out) * gate``; ``residual`` (N,) returns ``residual + out`` in the
    residual's dtype. Otherwise the result has the layer's dtype: the weight's, or for a float8_e4m3fn
    weight with per-row ``scale`` (layers.quant), the scales'. ``config`` overrides the tile table.
    ``conv = (weight (E, W), bias (E,) or None, state (E, W - 1))``: the first E outputs (Mamba's
    in_proj: x_in, then z) go through one step of the depthwise causal conv, as
    :func:`layers.mamba.causal_conv1d_update_ref` (silu, the state updated in place); no other epilogue.
    ``ring = (ring_k, ring_v, at, first)`` (rings (W, ...) of one sequence, ``at`` a one-element
    device tensor): outputs ``first`` + [0, M) also go to ``ring_k[at]`` and the next M to ``ring_v[at]``
    (M = a ring slot's size; a sliding-window layer's Wqkv writing its new k and v, as
    :meth:`layers.attention.DiffAttention.project` does unfused).

    A config's fifth entry (F16, fp8 weights in a 16-bit layer only; fp32 layers keep fp32 products)
    multiplies and sums each program's tiles in f16 before the fp32 reduction: the tune sweep offers
    it for GEMVs behind a norm, whose inputs are small (an f16 sum of a few products of |x| over
    ~10**4 would overflow), and picks it where it is faster."""
    K = x.shape[-1]
    N = weight.shape[0] // 2 if glu else weight.shape[0]
    fp8 = scale is not None
    dtype = dtype_of(weight, scale)
    assert x.numel() == K and weight.shape[1] == K and weight.is_contiguous() and x.is_contiguous()
    assert not fp8 or (weight.dtype == torch.float8_e4m3fn and scale.shape == (weight.shape[0],) and scale.is_contiguous())
    for t in (gate, residual):
        assert t is None or (t.numel() == N and t.is_contiguous())
    if conv is not None:
        cw, cb, cs = conv
        E, taps = cw.shape
        assert not glu and gate is None and residual is None and E <= N and taps >= 2
        assert cw.is_contiguous() and cs.shape == (E, taps - 1) and cs.is_contiguous() and cs.dtype == dtype
    if ring is not None:
        rk, rv, at, first = ring
        width = rk[0].numel()
        assert not glu and residual is None and rk.is_contiguous() and rv.is_contiguous() and rk.shape == rv.shape
        assert at.numel() == 1 and rk.dtype == rv.dtype == dtype and 0 <= first <= N - 2 * width
    key = (N, K, glu, norm is not None, fp8, "gemv")
    if config is None:
        _note(key, x.device)
        config = gemv_config(*key, device=x.device)
    block_n, block_k, warps = config[:3]
    f16 = len(config) > 4 and bool(config[4]) and fp8 and dtype != torch.float32
    out = torch.empty(*x.shape[:-1], N, device=x.device, dtype=residual.dtype if residual is not None else dtype)
    _launch(x, weight, scale, bias, out, norm, gate, residual, None, N, K, glu, block_n, block_k, warps, 1, 0, 0, f16,
            conv, ring)
    return out


def dtype_of(weight: torch.Tensor, scale: torch.Tensor | None) -> torch.dtype:
    """The dtype a layer computes in: its weight's, or for fp8 weights its scales'."""
    return scale.dtype if scale is not None else weight.dtype


def chain(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, rank: int, scale1: torch.Tensor | None = None,
          scale2: torch.Tensor | None = None, configs: tuple[Config | None, Config | None] = (None, None)
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``y1 = x @ W1.T`` and ``y2 = y1[:rank] @ W2.T`` for one row x (K,) (W1 (N1, K), W2 (N2, rank),
    each optionally fp8 with its scales), without biases: Mamba's x_proj then dt_proj. Two launches:
    a split-K pass over W1 (more programs than W1's few rows give, for its bandwidth) writing fp32
    partial rows, then the GEMV over W2, which adds the partials as it reads its input; its first
    program also writes y1 (rounded to the layer's dtype, as the unfused path rounds it)."""
    K = x.shape[-1]
    N1, N2 = w1.shape[0], w2.shape[0]
    assert x.numel() == K and w1.shape[1] == K and w2.shape[1] == rank <= N1
    assert w1.is_contiguous() and w2.is_contiguous() and x.is_contiguous()
    dtype = dtype_of(w1, scale1)
    keys = ((N1, K, False, False, scale1 is not None, "split"), (N2, rank, False, False, scale2 is not None, "gemv"))
    cfgs = []
    for key, cfg in zip(keys, configs):
        if cfg is None:
            _note(key, x.device)
            cfg = gemv_config(*key, device=x.device)
        cfgs.append(cfg)
    (bn1, bk1, nw1, split), (bn2, bk2, nw2) = cfgs[0][:4], cfgs[1][:3]
    parts = torch.empty(split, N1, device=x.device, dtype=torch.float32)
    y1 = torch.empty(*x.shape[:-1], N1, device=x.device, dtype=dtype)
    y2 = torch.empty(*x.shape[:-1], N2, device=x.device, dtype=dtype_of(w2, scale2))
    _launch(x, w1, scale1, None, parts, None, None, None, None, N1, K, False, bn1, bk1, nw1, split, 0, 0)
    _launch(parts, w2, scale2, None, y2, None, None, None, y1, N2, rank, False, bn2, bk2, nw2, 1, split, N1)
    return y1, y2


def _launch(x, weight, scale, bias, out, norm, gate, residual, x_out, N, K, glu, block_n, block_k, warps,
            split_k, x_parts, x_stride, f16=False, conv=None, ring=None) -> None:  # type: ignore[no-untyped-def]
    kind, norm_w, norm_b, eps = norm or (NO_NORM, None, None, 0.0)
    conv_w, conv_b, conv_state = conv or (None, None, None)
    ring_k, ring_v, ring_at, ring_from = ring or (None, None, None, 0)
    taps = conv_w.shape[1] if conv_w is not None else 0
    k_split = triton.cdiv(K, split_k * block_k) * block_k
    _gemv[(triton.cdiv(N, block_n), split_k)](
        x, weight, scale if scale is not None else weight, bias if bias is not None else weight, out,
        norm_w if norm_w is not None else weight, norm_b if norm_b is not None else weight,
        gate if gate is not None else weight, residual if residual is not None else weight,
        x_out if x_out is not None else out,
        *(t if t is not None else weight for t in (conv_w, conv_b, conv_state, ring_k, ring_v, ring_at)),
        N, eps, conv_w.shape[0] if conv_w is not None else 0, ring_from, ring_k[0].numel() if ring_k is not None else 0, K,
        HAS_BIAS=bias is not None, GLU=glu, NORM=kind, NORM_BIAS=norm_b is not None, GATED=gate is not None,
        RESIDUAL=residual is not None, EVEN=K == split_k * k_split and N % block_n == 0, FP8=scale is not None,
        SPLIT_K=split_k, X_PARTS=x_parts, X_STRIDE=x_stride, BLOCK_N=block_n, BLOCK_K=block_k, F16=f16, PDL=PDL,
        CONV=taps, CONV_BIAS=conv_b is not None, CONV_P2=triton.next_power_of_2(max(taps - 1, 1)), RING=ring is not None,
        num_warps=warps, **({"launch_pdl": True} if PDL else {}))


def _pdl_available() -> bool:
    """Programmatic dependent launch: Triton 3.3+, Hopper or newer (the current device, at import),
    not under the interpreter, not switched off with ``SAMBAY_PDL=0``."""
    if INTERPRET or gdc_wait is None or environment.read("SAMBAY_PDL", "1") == "0" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability()[0] >= 9


PDL = _pdl_available()


@torch.library.custom_op("sambay::gemv", mutates_args=())
def gemv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, glu: bool = False,
            norm_kind: int = NO_NORM, norm_weight: torch.Tensor | None = None, norm_bias: torch.Tensor | None = None,
            eps: float = 0.0, gate: torch.Tensor | None = None, residual: torch.Tensor | None = None,
            scale: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`gemv` as an operator torch.compile keeps whole (and CUDA graphs capture)."""
    norm = (norm_kind, norm_weight, norm_bias, eps) if norm_kind != NO_NORM else None
    return gemv(x, weight, bias, glu, norm, gate, residual, scale)


@gemv_op.register_fake
def _(x, weight, bias=None, glu=False, norm_kind=NO_NORM, norm_weight=None, norm_bias=None, eps=0.0, gate=None,
      residual=None, scale=None):  # type: ignore[no-untyped-def]
    n = weight.shape[0] // 2 if glu else weight.shape[0]
    dtype = residual.dtype if residual is not None else dtype_of(weight, scale)
    return x.new_empty(*x.shape[:-1], n, dtype=dtype)


@torch.library.custom_op("sambay::gemv_conv", mutates_args=("conv_state",))
def gemv_conv_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, norm_kind: int,
                 norm_weight: torch.Tensor | None, norm_bias: torch.Tensor | None, eps: float,
                 scale: torch.Tensor | None, conv_weight: torch.Tensor, conv_bias: torch.Tensor | None,
                 conv_state: torch.Tensor) -> torch.Tensor:
    """:func:`gemv` with the ``conv`` epilogue (Mamba's in_proj), as an operator torch.compile keeps whole."""
    norm = (norm_kind, norm_weight, norm_bias, eps) if norm_kind != NO_NORM else None
    return gemv(x, weight, bias, False, norm, scale=scale, conv=(conv_weight, conv_bias, conv_state))


@gemv_conv_op.register_fake
def _(x, weight, bias, norm_kind, norm_weight, norm_bias, eps, scale, conv_weight, conv_bias, conv_state):  # type: ignore[no-untyped-def]
    return x.new_empty(*x.shape[:-1], weight.shape[0], dtype=dtype_of(weight, scale))


@torch.library.custom_op("sambay::gemv_ring", mutates_args=("ring_k", "ring_v"))
def gemv_ring_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, norm_kind: int,
                 norm_weight: torch.Tensor | None, norm_bias: torch.Tensor | None, eps: float,
                 scale: torch.Tensor | None, ring_k: torch.Tensor, ring_v: torch.Tensor, at: torch.Tensor,
                 first: int) -> torch.Tensor:
    """:func:`gemv` with the ``ring`` epilogue (a sliding-window layer's Wqkv), as an operator torch.compile keeps whole."""
    norm = (norm_kind, norm_weight, norm_bias, eps) if norm_kind != NO_NORM else None
    return gemv(x, weight, bias, False, norm, scale=scale, ring=(ring_k, ring_v, at, first))


@gemv_ring_op.register_fake
def _(x, weight, bias, norm_kind, norm_weight, norm_bias, eps, scale, ring_k, ring_v, at, first):  # type: ignore[no-untyped-def]
    return x.new_empty(*x.shape[:-1], weight.shape[0], dtype=dtype_of(weight, scale))


@torch.library.custom_op("sambay::gemv_chain", mutates_args=())
def chain_op(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, rank: int, scale1: torch.Tensor | None = None,
             scale2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`chain` as an operator torch.compile keeps whole."""
    return chain(x, w1, w2, rank, scale1, scale2)


@chain_op.register_fake
def _(x, w1, w2, rank, scale1=None, scale2=None):  # type: ignore[no-untyped-def]
    d1, d2 = dtype_of(w1, scale1), dtype_of(w2, scale2)
    return x.new_empty(*x.shape[:-1], w1.shape[0], dtype=d1), x.new_empty(*x.shape[:-1], w2.shape[0], dtype=d2)
