"""Mamba-1 mixer (selective SSM), with a whole-sequence path and a one-token step path.

The four kernels sit behind small functions, a plain-PyTorch reference (``*_ref``) and a CUDA
version (``*_cuda``, wrapping mamba-ssm and causal-conv1d) with one signature (layout (B, E, T)):

    causal_conv1d          silu(depthwise causal conv) over a sequence, from a conv state
    causal_conv1d_update   the same for one token, updating the conv state in place
    selective_scan         the SSM over a sequence, from an SSM state
    ssm_step               the SSM for one token, updating the SSM state in place, and the gate
                           (the CUDA version is this package's Triton kernel, layers.mamba_triton)

State conventions: the conv state holds the last ``K - 1`` inputs (B, E, K-1) in the model
dtype; the SSM state (B, E, N) is fp32. Both start at zero for a new sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import backends
from .linear import Linear, gemv_norm_args, linear_chain

# ----------------------------------------------------------------------------- reference kernels


def causal_conv1d_ref(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``silu(conv)`` of x (B, E, T) with weight (E, K), continuing from ``conv_state`` (B, E, K-1).

    Returns the output (B, E, T) in x's dtype and the new conv state (the last K-1 inputs).
    """
    B, E, T = x.shape
    K = weight.shape[-1]
    if conv_state is None:
        conv_state = x.new_zeros(B, E, K - 1)
    xx = torch.cat([conv_state.to(x.dtype), x], dim=-1)  # (B, E, K-1+T)
    out = F.conv1d(xx.float(), weight.float().unsqueeze(1), None if bias is None else bias.float(), groups=E)
    return F.silu(out).to(x.dtype), xx[..., T:]


def causal_conv1d_update_ref(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """One token x (B, E): returns ``silu(conv)`` (B, E) and shifts x into ``conv_state`` in place."""
    xx = torch.cat([conv_state, x.unsqueeze(-1).to(conv_state.dtype)], dim=-1)  # (B, E, K)
    out = (xx.float() * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    conv_state.copy_(xx[..., 1:])
    return F.silu(out).to(x.dtype)


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    ssm_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective SSM over a sequence, in fp32.

    u, delta (B, E, T); A (E, N); B, C (B, N, T); D, delta_bias (E,); ssm_state (B, E, N) or None.
    ``dt = softplus(delta + delta_bias)``, ``h_t = exp(dt A) h_{t-1} + dt u_t B_t``,
    ``y_t = C_t . h_t + D u_t``. Returns y (B, E, T) in u's dtype and the last state (B, E, N) fp32.
    """
    Bsz, E, T = u.shape
    uf = u.float()
    dt = F.softplus(delta.float() + delta_bias.float()[:, None])  # (B, E, T)
    A, Bf, Cf = A.float(), B.float(), C.float()
    h = u.new_zeros(Bsz, E, A.shape[1], dtype=torch.float32) if ssm_state is None else ssm_state.float()
    ys = []
    for t in range(T):
        dt_t = dt[:, :, t, None]  # (B, E, 1)
        h = torch.exp(dt_t * A) * h + (dt_t * uf[:, :, t, None]) * Bf[:, None, :, t]
        ys.append((h * Cf[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + D.float()[:, None] * uf
    return y.to(u.dtype), h


def ssm_step_ref(
    ssm_state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SSM step: x, dt, z (B, E); B, C (B, N); ``A = -exp(A_log)``; updates ``ssm_state`` (B, E, N)
    in place. Returns y (B, E) and the gated ``y * silu(z)`` out_proj reads, both in x's dtype."""
    dt = F.softplus(dt.float() + dt_bias.float())[..., None]  # (B, E, 1)
    A = -torch.exp(A_log.float())
    h = torch.exp(dt * A) * ssm_state.float() + dt * x.float()[..., None] * B.float()[:, None]
    ssm_state.copy_(h)
    y = ((h * C.float()[:, None]).sum(-1) + D.float() * x.float()).to(x.dtype)
    return y, y * F.silu(z)


# ----------------------------------------------------------------------------- CUDA kernels


def causal_conv1d_cuda(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`causal_conv1d_ref` through causal-conv1d; the state is prepended as K-1 extra inputs."""
    from causal_conv1d import causal_conv1d_fn

    K = weight.shape[-1]
    xx = x if conv_state is None else torch.cat([conv_state.to(x.dtype), x], dim=-1)
    out = causal_conv1d_fn(xx.contiguous(), weight, bias, activation="silu")
    if conv_state is not None:
        out = out[..., K - 1:].contiguous()  # the scan kernel needs aligned rows
    new_state = F.pad(xx, (max(0, K - 1 - xx.shape[-1]), 0))[..., -(K - 1):]
    return out, new_state


# The one-token kernels are custom ops so that torch.compile can trace a decode step through them.
@torch.library.custom_op("sambay::causal_conv1d_update", mutates_args=("conv_state",))
def causal_conv1d_update_cuda(
    x: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    from causal_conv1d import causal_conv1d_update

    return causal_conv1d_update(x, conv_state, weight, bias, activation="silu")


@causal_conv1d_update_cuda.register_fake
def _(x, conv_state, weight, bias):  # type: ignore[no-untyped-def]
    return torch.empty_like(x)


def selective_scan_cuda(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    delta_bias: torch.Tensor,
    ssm_state: torch.Tensor | None = None,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`selective_scan_ref` through mamba-ssm's kernel, which always starts from a zero state.

    The scan is linear in its state, so a nonzero initial state h0 adds
    ``C_t . (exp(A * sum_{s<=t} dt_s) h0)`` to y_t and ``exp(A * sum_s dt_s) h0`` to the last
    state; that correction is computed here in fp32, ``chunk`` time steps at a time.
    """
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    y, last = selective_scan_fn(u, delta, A, B.contiguous(), C.contiguous(), D.float(), z=None,
                                delta_bias=delta_bias.float(), delta_softplus=True, return_last_state=True)
    if ssm_state is None:
        return y, last
    dt_cum = F.softplus(delta.float() + delta_bias.float()[:, None]).cumsum(-1)  # (B, E, T)
    A = A.float()
    h0 = ssm_state.float()
    y = y.float()
    for t in range(0, u.shape[-1], chunk):
        decay = torch.exp(dt_cum[:, :, t:t + chunk, None] * A[:, None])  # (B, E, t, N)
        y[:, :, t:t + chunk] += torch.einsum("bnt,betn,ben->bet", C[:, :, t:t + chunk].float(), decay, h0)
    last = last + torch.exp(dt_cum[:, :, -1:] * A) * h0
    return y.to(u.dtype), last


def ssm_step_cuda(
    ssm_state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, A_log: torch.Tensor, B: torch.Tensor,
    C: torch.Tensor, D: torch.Tensor, dt_bias: torch.Tensor, z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ssm_step_ref` in one Triton kernel (:mod:`layers.mamba_triton`)."""
    from .mamba_triton import ssm_step_triton

    return ssm_step_triton(ssm_state, x, dt, A_log, B, C, D, dt_bias, z)


KERNELS = {
    "ref": (causal_conv1d_ref, causal_conv1d_update_ref, selective_scan_ref, ssm_step_ref),
    "cuda": (causal_conv1d_cuda, causal_conv1d_update_cuda, selective_scan_cuda, ssm_step_cuda),
}


def kernels(device: torch.device, what: str):
    """(conv, conv_update, scan, ssm_step) for ``device``, as :mod:`layers.backends` picks."""
    name = backends.mamba_backend(device)
    backends.announce(f"mamba {what}", name)
    return KERNELS[name]

# ----------------------------------------------------------------------------- module


class Mamba(nn.Module):
    """Mamba-1 mixer: ``out_proj(ssm(silu(conv(x_in))) * silu(z))`` with ``x_in, z = in_proj(x)``.

    ``forward`` returns ``(out, y)``: ``y`` (B, T, E) is the SSM output before the ``silu(z)``
    gate, which SambaY's memory layer hands to the GMUs. ``A_log`` and ``D`` are used in fp32
    (checkpoint loading keeps them fp32), the ``dt`` bias is added in fp32.
    """

    def __init__(
        self,
        d_model: int,
        d_inner: int,
        d_state: int = 16,
        d_conv: int = 4,
        dt_rank: int | None = None,
        conv_bias: bool = True,
        proj_bias: bool = False,
    ) -> None:
        super().__init__()
        self.d_inner, self.d_state, self.d_conv = d_inner, d_state, d_conv
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = Linear(d_model, 2 * d_inner, bias=proj_bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, bias=conv_bias, padding=d_conv - 1)
        self.x_proj = Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = Linear(self.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(d_inner, d_state))
        self.D = nn.Parameter(torch.empty(d_inner))
        self.out_proj = Linear(d_inner, d_model, bias=proj_bias)

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's initialization: S4D-real A, D = 1, dt log-uniform in [dt_min, dt_max]."""
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(A).expand(self.d_inner, -1))
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(self.d_inner, device=self.D.device) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=1e-4)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)

    def _ssm_inputs(self, x_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_c (..., E) -> dt (..., E) before bias, B and C (..., N)."""
        x_dbl, dt = linear_chain(x_c, self.x_proj.weight, self.dt_proj.weight, self.dt_rank,
                                 scale1=self.x_proj.weight_scale, scale2=self.dt_proj.weight_scale)
        _, Bm, Cm = x_dbl.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return dt, Bm, Cm

    def forward(
        self,
        x: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        pad_mask: torch.Tensor | None = None,
        fresh: bool = False,
        norm: nn.Module | None = None,
        residual: torch.Tensor | None = None,
        lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> (residual + out (B, T, d), y (B, T, E)), the mixer reading ``norm(x)``.

        ``state`` = (conv_state, ssm_state) continues a sequence (from zero when ``fresh``) and
        is updated in place. ``pad_mask`` (B, T), True on real tokens: left padding is zeroed
        before and after the conv so that the state after the pads is a fresh sequence's.
        ``lengths`` (B,) (fresh rows right-padded to T): the state is each row's after its
        ``lengths[b]`` tokens: the pads' time steps are zero (dt = softplus(-inf)), so the SSM
        state stops at the row's end, and the conv state is the row's last K-1 inputs.
        """
        causal_conv1d, _, selective_scan, _ = kernels(x.device, "prefill")
        x_in, z = self.in_proj(x, norm=norm).chunk(2, dim=-1)
        x_in = x_in.transpose(1, 2)  # (B, E, T)
        if pad_mask is not None:
            x_in = x_in.masked_fill(~pad_mask[:, None], 0)
        conv_state, ssm_state = state if state is not None and not fresh else (None, None)
        x_c, new_conv = causal_conv1d(x_in, self.conv1d.weight.squeeze(1), self.conv1d.bias, conv_state)
        if pad_mask is not None:
            x_c = x_c.masked_fill(~pad_mask[:, None], 0)
        dt, Bm, Cm = self._ssm_inputs(x_c.transpose(1, 2))
        if lengths is not None:
            assert fresh or state is None, "right-padded rows start from zero"
            T, K1 = x_in.shape[-1], self.conv1d.weight.shape[-1] - 1
            dt = dt.masked_fill((torch.arange(T, device=x.device) >= lengths[:, None])[..., None], float("-inf"))
            xx = F.pad(x_in, (K1, 0))  # zeros before the first token: a fresh conv state
            at = (lengths[:, None] + torch.arange(K1, device=x.device))[:, None].expand(-1, x_in.shape[1], -1)
            new_conv = xx.gather(2, at)  # inputs lengths-K+1 .. lengths-1 of each row
        A = -torch.exp(self.A_log.float())
        y, new_ssm = selective_scan(
            x_c, dt.transpose(1, 2), A, Bm.transpose(1, 2), Cm.transpose(1, 2), self.D, self.dt_proj.bias, ssm_state
        )
        if state is not None:
            state[0].copy_(new_conv)
            state[1].copy_(new_ssm)
        y = y.transpose(1, 2)  # (B, T, E)
        return self.out_proj(y * F.silu(z), residual=residual), y

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], norm: nn.Module | None = None,
             residual: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token x (B, 1, d), updating ``state`` in place; ``norm`` and ``residual`` as in ``forward``."""
        _, causal_conv1d_update, _, ssm_step = kernels(x.device, "decode")
        conv_state, ssm_state = state
        conv_w, proj = self.conv1d.weight.squeeze(1), self.in_proj
        fused = (gemv_norm_args(x, proj.weight, proj.bias, norm)
                 if backends.mamba_backend(x.device) == "cuda" and not backends.needs_autograd(conv_w) else None)
        if fused is not None:  # one row: the conv step rides in in_proj's GEMV (a launch fewer)
            from .gemv_triton import gemv_conv_op

            backends.announce("mamba in_proj + conv step (one row)", "triton gemv")
            xz = gemv_conv_op(x.reshape(-1).contiguous(), proj.weight, proj.bias, *fused, proj.weight_scale, conv_w,
                              self.conv1d.bias, conv_state[0])
            x_c, z = xz.view(1, -1).chunk(2, dim=-1)
        else:
            x_in, z = proj(x[:, 0], norm=norm).chunk(2, dim=-1)  # (B, E) each
            x_c = causal_conv1d_update(x_in, conv_state, conv_w, self.conv1d.bias)
        dt, Bm, Cm = self._ssm_inputs(x_c)
        y, gated = ssm_step(ssm_state, x_c, dt, self.A_log, Bm, Cm, self.D, self.dt_proj.bias, z)
        out = self.out_proj(gated, residual=residual[:, 0] if residual is not None else None)
        return out[:, None], y[:, None]
