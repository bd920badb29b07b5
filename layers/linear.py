"""Linear layers, with the block around them: an optional norm before, and an optional gate or
residual add after; weights in the model dtype or in fp8 with per-row scales (:mod:`layers.quant`).

torch's GEMM everywhere, except for a single row on CUDA (batch-1 decoding), where the Triton
GEMV of :mod:`layers.gemv_triton` streams the weight faster (an fp8 weight dequantized in
registers) and computes the norm, gate and residual add in the same kernel. :func:`linear_ref` is
its reference twin. The ``linear`` backend knob (:mod:`layers.backends`) forces torch's path; the
``fp8_gemm`` knob picks how fp8 weights multiply more rows on CUDA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import backends
from .norm import fused_norm_args
from .quant import FP8, FP8_MAX, check_mode, check_quantized, dequantize, quantize_fp8


def _epilogue(out: torch.Tensor, glu: bool, gate: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
    if glu:
        g, u = out.chunk(2, dim=-1)
        out = u * F.silu(g)
    if gate is not None:
        out = F.silu(out) * gate
    return out if residual is None else residual + out


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
               scale: torch.Tensor | None = None, glu: bool = False, norm: nn.Module | None = None,
               gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """``residual + silu(F.linear(norm(x), W, bias)) * gate``, each part optional:

    - ``W`` is ``weight``, or ``dequantize(weight, scale)`` for an fp8 weight with its per-row
      ``scale`` (whose dtype is the dtype the layer computes in);
    - ``norm`` (``nn.LayerNorm`` or :class:`layers.norm.RMSNorm`) reads x cast to W's dtype;
    - ``glu``: ``u * silu(g)`` where ``g, u = F.linear(...).chunk(2, -1)`` (gate rows first, then up
      rows, as both official checkpoints store the gated-SiLU MLP);
    - ``gate``: ``silu(out) * gate``;
    - ``residual``: ``residual + out``, in the residual's dtype (SambaY's stream is fp32).
    """
    if scale is not None:
        weight = dequantize(weight, scale)
    if norm is not None:
        x = norm(x.to(weight.dtype))
    return _epilogue(F.linear(x, weight, bias), glu, gate, residual)


def fp8_matmul(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
               ) -> torch.Tensor:
    """``F.linear(x, dequantize(weight, scale), bias)`` on the fp8 tensor cores: x (..., K) is
    quantized per row to e4m3 (scale amax/448, in fp32), then ``torch._scaled_mm`` multiplies with
    both row-wise scales and writes the scales' dtype (bf16 only: torch's row-wise scaling).
    Quantizing x adds e4m3's error on the activations to the weights' (about 3% of the output each)."""
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    sx = (x2.abs().amax(dim=1, keepdim=True).float() / FP8_MAX).clamp_(min=1e-12)  # (M, 1)
    xq = (x2.float() / sx).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
    out = torch._scaled_mm(xq, weight.t(), scale_a=sx, scale_b=scale.float()[None, :], out_dtype=scale.dtype)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], weight.shape[0])


def gemv_norm_args(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, norm: nn.Module | None
                   ) -> tuple | None:
    """How the Triton GEMV computes ``norm`` (:func:`layers.norm.fused_norm_args`) when x is one row
    of inference on CUDA that the GEMV takes (a contiguous weight, the ``triton`` linear backend, no
    autograd); None when the row goes through torch's path."""
    if not (x.is_cuda and x.numel() == x.shape[-1] and weight.is_contiguous()
            and backends.linear_backend(x.device) == "triton" and not backends.needs_autograd(x, weight, bias, norm)):
        return None
    return fused_norm_args(norm)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
           scale: torch.Tensor | None = None, glu: bool = False, norm: nn.Module | None = None,
           gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`linear_ref`; one kernel for a single row of inference on CUDA (where the fused kernel
    computes exactly what :func:`linear_ref` does: a norm it knows, a gate in the layer's dtype and
    a residual of the output's shape in the layer's dtype or fp32). With an fp8 weight, more rows
    on CUDA take the ``fp8_gemm`` backend's way (:mod:`layers.backends`)."""
    check_quantized(weight, scale)
    dtype = scale.dtype if scale is not None else weight.dtype  # the dtype the layer computes in
    out_shape = (*x.shape[:-1], weight.shape[0] // 2 if glu else weight.shape[0])
    inference = x.is_cuda and not backends.needs_autograd(x, weight, bias, norm, gate, residual)
    fused_norm = gemv_norm_args(x, weight, bias, norm)
    if (fused_norm is not None and inference
            and (gate is None or (gate.shape == out_shape and gate.dtype == dtype))
            and (residual is None or (residual.shape == out_shape and residual.dtype in (dtype, torch.float32)))):
        from .gemv_triton import gemv_op

        backends.announce("linear (one row)", "triton gemv" + (" fp8" if scale is not None else ""))
        flat = [t.reshape(-1).contiguous() if t is not None else None for t in (gate, residual)]
        return gemv_op(x.contiguous(), weight, bias, glu, *fused_norm, *flat, scale).view(out_shape)
    if (scale is not None and inference and backends.fp8_gemm_backend() == "scaled_mm" and dtype == torch.bfloat16
            and weight.shape[0] % 16 == 0 and weight.shape[1] % 16 == 0):
        backends.announce("linear (fp8, several rows)", "torch._scaled_mm")
        if norm is not None:
            x = norm(x.to(dtype))
        return _epilogue(fp8_matmul(x, weight, scale, bias), glu, gate, residual)
    return linear_ref(x, weight, bias, scale=scale, glu=glu, norm=norm, gate=gate, residual=residual)


def linear_chain_ref(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor, rank: int, *,
                     scale1: torch.Tensor | None = None, scale2: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``y1 = linear_ref(x, first)`` and ``y2 = linear_ref(y1[..., :rank], second)``, no biases (Mamba's
    x_proj then dt_proj, whose bias the scan adds in fp32); each weight optionally fp8 with its scales."""
    y1 = linear_ref(x, first, scale=scale1)
    return y1, linear_ref(y1[..., :rank], second, scale=scale2)


def linear_chain(x: torch.Tensor, first: torch.Tensor, second: torch.Tensor, rank: int, *,
                 scale1: torch.Tensor | None = None, scale2: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`linear_chain_ref`; for a single row of inference on CUDA, two launches that split the
    first (few-row, wide) weight along K for bandwidth (:func:`layers.gemv_triton.chain`)."""
    check_quantized(first, scale1)
    check_quantized(second, scale2)
    if (x.numel() == x.shape[-1] and x.is_cuda and first.is_contiguous() and second.is_contiguous()
            and backends.linear_backend(x.device) == "triton" and not backends.needs_autograd(x, first, second)):
        from .gemv_triton import chain_op

        backends.announce("linear chain (one row)", "triton split-K gemv + gemv")
        y1, y2 = chain_op(x.contiguous(), first, second, rank, scale1, scale2)
        return y1.view(*x.shape[:-1], -1), y2.view(*x.shape[:-1], -1)
    return linear_chain_ref(x, first, second, rank, scale1=scale1, scale2=scale2)


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and names) computed by :func:`linear`; ``forward`` takes
    :func:`linear`'s ``glu``, ``norm``, ``gate`` and ``residual``. After :func:`quantize_model`,
    ``weight`` is float8_e4m3fn and the buffer ``weight_scale`` holds its per-row scales (None before)."""

    weight_scale: torch.Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.register_buffer("weight_scale", None)

    def forward(self, x: torch.Tensor, *, glu: bool = False, norm: nn.Module | None = None,
                gate: torch.Tensor | None = None, residual: torch.Tensor | None = None) -> torch.Tensor:
        return linear(x, self.weight, self.bias, scale=self.weight_scale, glu=glu, norm=norm, gate=gate,
                      residual=residual)


@torch.no_grad()
def quantize_model(model: nn.Module, mode: str | None) -> nn.Module:
    """Quantize every :class:`Linear` weight of ``model`` in place (``mode`` ``"fp8"``: float8 e4m3 with
    per-row scales, :func:`layers.quant.quantize_fp8`; None leaves the model as it is) and return it.

    Each layer's fp8 weight and scales (in the layer's current dtype) replace its weight before the
    next layer is done, so the model needs at most one layer's temporaries beyond itself. Biases,
    norms, embeddings, convolutions and the Mamba parameters stay as they are; a Linear that shares
    its weight with an embedding (a tied lm_head) gets its own fp8 weight while the embedding keeps
    the full-precision one for lookups. The result is for inference (fp8 weights get no gradients);
    cast the model's dtype before quantizing, not after (:func:`linear` refuses a cast fp8 weight)."""
    check_mode(mode)
    if mode is None:
        return model
    on_cuda = False
    for module in model.modules():
        if isinstance(module, Linear) and module.weight_scale is None:
            if module.weight.is_meta:
                raise ValueError("quantize_model needs the weights loaded (this model is on the meta device)")
            q, scale = quantize_fp8(module.weight.detach())
            module.weight = nn.Parameter(q, requires_grad=False)  # drops this module's reference to the old one
            module.weight_scale = scale
            on_cuda |= q.is_cuda
    if on_cuda:
        torch.cuda.empty_cache()  # give the freed weights back, for whoever sizes a cache from free memory next
    return model
