"""fp8 weights: float8 e4m3 with one scale per output row, computed from the full-precision weight.

A quantized weight is the pair ``(q, scale)``: ``q`` (N, K) ``torch.float8_e4m3fn`` and ``scale``
(N,) in the dtype the layer computes in (the model's dtype, e.g. bf16); it stands for
``dequantize(q, scale) = q * scale[:, None]``. ``scale = amax(|row|) / 448`` (448 is e4m3's largest
finite value), rounded up to the scales' dtype *before* the row is divided by it, so that the
rounding of the scale adds no error: ``q * scale`` is exactly what the quantizer meant, and the only
error is e4m3's own (3 mantissa bits: at most 2^-4 of a value, or 2^-10 of the scale for values in
e4m3's subnormal range). The scales' dtype is what tells a layer which dtype its fp8 weight computes
in (:func:`layers.linear.linear`), so no further argument travels with the pair.

:func:`layers.linear.quantize_model` puts these in every projection of a model.
"""

from __future__ import annotations

import torch
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
QUANTIZE_MODES = ("fp8",)

# Elements quantized per chunk of rows: bounds the fp32 temporaries (64 MB each) for the 200064-row heads.
_CHUNK_ELEMENTS = 1 << 24


def _round_up(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``scale`` (fp32, positive) in ``dtype``, rounded up where rounding to nearest went down (the
    next larger value of a positive float is the next integer of its bits)."""
    out = scale.to(dtype)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[out.element_size()]
    return torch.where(out.float() < scale, (out.view(bits) + 1).view(dtype), out)


@torch.no_grad()
def quantize_fp8(weight: torch.Tensor, scale_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (N, K) -> ``(q, scale)``: ``q`` (N, K) float8_e4m3fn, ``scale`` (N,) in ``scale_dtype``
    (default: the weight's dtype) with ``scale = amax(|row|) / 448`` rounded up; an all-zero row gets
    scale 1. Computed on the weight's device, in chunks of rows."""
    if weight.dim() != 2 or not weight.is_floating_point() or weight.dtype == FP8:
        raise ValueError(f"quantize_fp8 takes a 2-D floating-point weight, got {weight.dtype} of shape "
                         f"{tuple(weight.shape)}")
    scale_dtype = scale_dtype or weight.dtype
    N, K = weight.shape
    q = torch.empty(N, K, dtype=FP8, device=weight.device)
    scale = torch.empty(N, dtype=scale_dtype, device=weight.device)
    step = max(1, _CHUNK_ELEMENTS // max(K, 1))
    for i in range(0, N, step):
        w = weight[i:i + step].float()
        amax = w.abs().amax(dim=1)
        s = _round_up(torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax)), scale_dtype)
        q[i:i + step] = (w / s.float()[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
        scale[i:i + step] = s
    return q, scale


def check_mode(mode: str | None) -> None:
    """Raise ValueError unless ``mode`` is None (no quantization) or one of :data:`QUANTIZE_MODES`."""
    if mode is not None and mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize mode {mode!r}; choose from {QUANTIZE_MODES} or None")


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``q * scale[:, None]`` in the scales' dtype (each element rounded once: e4m3 values are exact
    in bf16, fp16 and fp32, and torch multiplies half-precision tensors in fp32)."""
    return q.to(scale.dtype) * scale[:, None]


def check_quantized(weight: torch.Tensor, scale: torch.Tensor | None) -> None:
    """Raise ValueError unless ``weight`` is a plain weight (``scale`` None) or an fp8 weight with one
    scale per row in a floating dtype other than fp8 (what ``model.to(dtype)`` after quantizing breaks)."""
    if scale is None:
        if weight.dtype == FP8:
            raise ValueError("an fp8 weight needs its per-row scales (layers.quant.quantize_fp8 returns both)")
        return
    if weight.dtype != FP8 or scale.dtype == FP8 or scale.shape != (weight.shape[0],):
        raise ValueError(f"a quantized weight is float8_e4m3fn (N, K) with scales (N,), got a {weight.dtype} weight "
                         f"{tuple(weight.shape)} with {scale.dtype} scales {tuple(scale.shape)} (was the model cast "
                         "with .to(dtype) after quantizing? cast first, then quantize)")
