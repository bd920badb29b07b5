"""The decode-attention, RoPE-store, GEMV, SSM-step and sampling kernels compile for Hopper (sm_90), checked without a GPU.

Triton's interpreter (how the other CPU tests run the kernels) executes the kernel's Python and
accepts what the compiler refuses (a constexpr passed through a tuple, say), so a kernel can pass
every CPU test and fail to build on the GPU. Here a subprocess without the interpreter points
Triton's driver at an sm_90 target (``layers.sm90``) and calls the kernels on CPU tensors: each
compiles through Triton's whole pipeline and stops at the launch, which needs a GPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import torch
from layers.sm90 import compiles as _compiles, target_sm90

target_sm90()
import layers.attention_triton as at
import layers.gemv_triton as gt
import layers.rope_triton as rs
from layers.attention import DiffAttnCore, tokens_contiguous
from layers.norm import LAYER_NORM
from layers.quant import quantize_fp8

def compiles(name, fn):
    _compiles(fn)
    print("compiled", name, flush=True)

def paged_inputs(B, HK, D, group, page, dtype, fp8):  # queries, an 8-block pool, scales, table, positions
    q = torch.randn(B, 1, group * HK, D, dtype=dtype)
    pool = torch.randn(8, page, HK, D).to(torch.float8_e4m3fn if fp8 else dtype)
    scale = torch.ones(8, page, HK) if fp8 else None
    return q, pool, scale, torch.zeros(B, 4, dtype=torch.int32), torch.full((B,), 40)

for dtype in (torch.bfloat16, torch.float32):
    for fp8 in (False, True):
        B, HK, D, page = 2, 2, 64, 16
        q, pool, scale, table, pos = paged_inputs(B, HK, D, 2, page, dtype, fp8)
        compiles(f"paged {dtype} fp8={fp8}",
                 lambda: at.paged_attention_triton(q, pool, pool, table, pos, None, None, scale, scale))
        core = DiffAttnCore(D, layer_idx=17).to(dtype)
        lam = (core.lambda_q1, core.lambda_k1, core.lambda_q2, core.lambda_k2, core.lambda_init,
               core.subln.weight, 1e-5)
        qd = torch.randn(B, 1, 4, D, dtype=dtype)
        compiles(f"paged differential {dtype} fp8={fp8}",
                 lambda: at.paged_diff_attention_triton(qd, pool, pool, table, pos, scale, scale, *lam))
    k = torch.randn(B, 64, HK, D, dtype=dtype)
    compiles(f"static {dtype}", lambda: at.decode_attention_triton(q, k, k, pos, torch.arange(64), None, 32))
    for fp8 in (False, True):  # RoPE + the K/V write, into the cache's layouts
        kp = torch.zeros(8, page, HK, D, dtype=torch.float8_e4m3fn if fp8 else dtype)
        vp = tokens_contiguous(kp) if fp8 else kp.clone()
        sc = [torch.ones(8, page, HK) for _ in range(2)] if fp8 else [None, None]
        angle = torch.randn(B, 1, D)
        kv = torch.randn(B, 1, HK, D, dtype=dtype)
        compiles(f"rotary store {dtype} fp8={fp8}", lambda: rs.rotary_store_triton(
            q, kv, kv, angle.cos().to(dtype), angle.sin().to(dtype), kp, vp, torch.tensor([3, 17]), *sc))
    compiles(f"static differential {dtype}",
             lambda: at.decode_diff_attention_triton(qd, k, k, pos, None, None, None, *lam))
    for fp8 in (False, True):  # the dense shape at a batch that fills the GPU: the large-batch launch config
        B, HK, D = 32, 8, 128
        q, pool, scale, table, pos = paged_inputs(B, HK, D, 3, page, dtype, fp8)
        compiles(f"paged wide {dtype} fp8={fp8}",
                 lambda: at.paged_attention_triton(q, pool, pool, table, pos, None, None, scale, scale))
    k = torch.randn(B, 256, HK, D, dtype=dtype)
    compiles(f"static wide {dtype}", lambda: at.decode_attention_triton(q, k, k, pos[:1]))
w8, ws = quantize_fp8(torch.randn(96, 512).to(torch.bfloat16))
x = torch.randn(512).to(torch.bfloat16)
ln = (LAYER_NORM, torch.ones(512, dtype=torch.bfloat16), torch.zeros(512, dtype=torch.bfloat16), 1e-5)
for f16 in (0, 1):  # fp8 GEMV tiles widened to fp32, or multiplied and summed in f16
    compiles(f"gemv fp8 F16={f16}", lambda: gt.gemv(x, w8, None, True, ln, scale=ws, config=(4, 256, 4, 1, f16)))
gt.PDL = True  # what Hopper runs: programmatic dependent launches (read at import and at each launch)
import layers.mamba_triton as mt  # noqa: E402
mt.PDL = True
for dtype in (torch.bfloat16, torch.float32):
    R, E, N = 2, 160, 16
    xz, x_dbl = torch.randn(R, 2 * E, dtype=dtype), torch.randn(R, 10 + 2 * N, dtype=dtype)
    args = (torch.randn(R, E, N), xz[:, :E], torch.randn(R, E, dtype=dtype), torch.randn(E, N),
            x_dbl[:, 10:10 + N], x_dbl[:, 10 + N:], torch.randn(E), torch.randn(E, dtype=dtype), xz[:, E:])
    compiles(f"ssm step {dtype}", lambda: mt.ssm_step_triton(*args))
    compiles(f"gemv PDL {dtype}", lambda: gt.gemv(x.to(dtype), torch.randn(96, 512, dtype=dtype), None, False, ln,
                                                  config=(4, 256, 4, 1, 0)))
    cw, cs = torch.randn(48, 4, dtype=dtype), torch.randn(48, 3, dtype=dtype)  # Mamba's in_proj + conv step
    compiles(f"gemv conv {dtype}", lambda: gt.gemv(x.to(dtype), torch.randn(96, 512, dtype=dtype), None, False, ln,
                                                   config=(4, 256, 4, 1, 0), conv=(cw, cw[:, 0], cs)))
    rk = torch.zeros(8, 2, 8, dtype=dtype)  # a sliding layer's Wqkv writing its k, v into the rings
    compiles(f"gemv ring {dtype}", lambda: gt.gemv(x.to(dtype), torch.randn(96, 512, dtype=dtype), None, False, ln,
                                                   config=(4, 256, 4, 1, 0), ring=(rk, rk.clone(), torch.tensor([3]), 64)))
import layers.sampling_triton as st  # each of the sampler's kernels on its own (a launch stops the first)
B, V = 3, 20000
C = -(-V // st.CHUNK)
lg, f, i = torch.randn(B, V, dtype=torch.bfloat16), torch.rand(B), torch.zeros(B, dtype=torch.long)
mx, arg, bad, kept = torch.zeros(B, C), torch.zeros(B, C, dtype=torch.int32), torch.zeros(B, C, dtype=torch.int32), torch.zeros(B, C)
state, mass, count = (torch.zeros(st.PASSES + 1, B, 2, dtype=torch.int32), torch.zeros(st.PASSES, B, C, 16),
                      torch.zeros(st.PASSES, B, C, 16, dtype=torch.int32))
kw = dict(CHUNK=st.CHUNK, SUB=st.SUB)
compiles("sampler max", lambda: st._max_pass[(B, C)](lg, mx, arg, bad, V, V, C, **kw, num_warps=4))
for first in (True, False):
    compiles(f"sampler search first={first}", lambda: st._search_pass[(B, C)](
        lg, mx, f, f, i, state, mass, count, V, V, C, 0, first, **kw, CP=4, num_warps=8))
compiles("sampler kept", lambda: st._kept_pass[(B, C)](lg, mx, f, f, i, state, mass, count, kept, V, V, C,
                                                       PASSES=st.PASSES, **kw, CP=4, num_warps=4))
compiles("sampler pick", lambda: st._pick[(B,)](lg, mx, arg, bad, f, f, state, kept, torch.zeros(B, 2, dtype=torch.long),
                                                V, V, C, PASSES=st.PASSES, **kw, CP=4, num_warps=4))
# Triton checks shared memory only at the launch: every variant must fit Hopper's 227 KB per block
print("shared", max(k.metadata.shared for kernel in (at._partial, at._combine)
                    for k in kernel.device_caches[0][0].values()))
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the kernels compile (and run) in the gpu tests")
def test_decode_kernels_compile_for_sm90() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    env["TRITON_CACHE_DIR"] = str(ROOT / ".pytest_cache" / "triton-sm90")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("compiled") == 37, proc.stdout
    shared = int(proc.stdout.split("shared")[-1])
    assert 0 < shared <= 232448, f"a decode-attention variant needs {shared} B of shared memory"
