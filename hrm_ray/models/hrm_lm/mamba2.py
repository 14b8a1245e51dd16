"""Mamba2 block in plain PyTorch, parameter-compatible with `mamba_ssm.modules.mamba2.Mamba2`.

The block: in_proj -> [z | xBC | dt]; depthwise causal conv1d + SiLU over xBC; the SSD scan
(state space duality, Dao & Gu 2024) with dt = softplus(dt + dt_bias), A = -exp(A_log) and the
D skip; gated RMSNorm with z; out_proj. The scan here is the chunked SSD algorithm: a quadratic
(attention-like) form inside each chunk, a linear recurrence of states between chunks.

On CUDA with `mamba_ssm` importable (the optional `[cuda]` extra) the same weights run through
its Triton kernels; otherwise the PyTorch path runs. Which one runs is logged once and exposed
as `Mamba2.kernel_path`.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

MAMBA_SSM_PATH = "mamba_ssm"
PYTORCH_PATH = "pytorch-ssd"


@functools.cache
def _mamba_ssm_kernels() -> tuple[Callable, Callable] | None:
    """(mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined), or None if mamba_ssm is missing."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import (
            mamba_chunk_scan_combined,
            mamba_split_conv1d_scan_combined,
        )
    except Exception as exc:  # not installed, or its compiled extension does not load
        logger.info("mamba_ssm is not usable (%s: %s)", type(exc).__name__, exc)
        return None
    return mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined


@functools.cache
def _log_path_once(path: str) -> None:
    logger.info("Mamba2 runs the %s path", path)


# --------------------------------------------------------------------------- SSD scan


def segsum(a: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = a[..., j+1] + ... + a[..., i] for i >= j, -inf above the diagonal.

    Summing a masked copy (rather than subtracting two cumsums) keeps the result exact for
    long segments; with a <= 0 every finite entry is <= 0, so exp() of it never overflows.
    """
    t = a.shape[-1]
    ones = torch.ones(t, t, dtype=torch.bool, device=a.device)
    x = a.unsqueeze(-1).expand(*a.shape, t).masked_fill(~ones.tril(-1), 0.0)
    return x.cumsum(dim=-2).masked_fill(~ones.tril(), -math.inf)


def _add_skip(y: torch.Tensor, x: torch.Tensor, D: torch.Tensor | None) -> torch.Tensor:
    if D is None:
        return y
    return y + x * (D.unsqueeze(-1) if D.dim() == 1 else D)


def ssd_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Chunked SSD scan, zero initial state.

    x: [b, l, h, p], dt: [b, l, h] (already softplus'ed, >= 0), A: [h] (< 0),
    B, C: [b, l, g, n] with h divisible by g (heads h*r..h*r+r-1 share group h // r),
    D: [h] or [h, p]. Returns y: [b, l, h, p] in x's dtype; the math runs in fp32 or wider.
    """
    batch, length, nheads, headdim = x.shape
    ngroups, dstate = B.shape[-2:]
    if nheads % ngroups or chunk_size < 1:
        raise ValueError(f"ssd_chunked: heads ({nheads}) must be divisible by groups ({ngroups}) "
                         f"and chunk_size ({chunk_size}) >= 1")
    r = nheads // ngroups
    out_dtype = x.dtype
    compute = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (t.to(compute) for t in (x, dt, A, B, C))
    x_unpadded = x

    pad = (-length) % chunk_size  # zero x and dt at the tail: no effect on earlier positions
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    nchunks, q = (length + pad) // chunk_size, chunk_size

    # Layout: [batch, group, head-in-group, chunk, position-in-chunk, ...]
    xc = x.view(batch, nchunks, q, ngroups, r, headdim).permute(0, 3, 4, 1, 2, 5)
    dtc = dt.view(batch, nchunks, q, ngroups, r).permute(0, 3, 4, 1, 2)
    Bc = B.view(batch, nchunks, q, ngroups, dstate).permute(0, 3, 1, 2, 4)
    Cc = C.view(batch, nchunks, q, ngroups, dstate).permute(0, 3, 1, 2, 4)
    a = dtc * A.view(ngroups, r, 1, 1)  # log-decay per step, <= 0
    a_cum = a.cumsum(dim=-1)

    # 1. Within a chunk: y_i = sum_{j<=i} (C_i . B_j) exp(a_{j+1} + ... + a_i) dt_j x_j
    scores = (Cc @ Bc.transpose(-1, -2)).unsqueeze(2)  # [b, g, 1, c, q, q]
    y = (scores * torch.exp(segsum(a)) * dtc.unsqueeze(-2)) @ xc

    # 2. State each chunk leaves at its end (from its own inputs): sum_j exp(a_{j+1..end}) dt_j x_j B_j^T
    to_end = torch.exp(a_cum[..., -1:] - a_cum) * dtc
    chunk_states = (xc * to_end.unsqueeze(-1)).transpose(-1, -2) @ Bc.unsqueeze(2)  # [b, g, r, c, p, n]

    # 3. Between chunks: state at the end of chunk i = sum_{k<=i} exp(T_{k+1} + ... + T_i) chunk_states_k,
    #    T = a chunk's total log-decay; chunk i starts from the state chunk i-1 ended with (0 for the first).
    carry = torch.exp(segsum(a_cum[..., -1]))  # [b, g, r, c, c]
    ends = (carry @ chunk_states.flatten(-2)).unflatten(-1, (headdim, dstate))
    starts = F.pad(ends[..., :-1, :, :], (0, 0, 0, 0, 1, 0))

    # 4. The state a chunk starts from, seen at its position i: exp(a_0 + ... + a_i) C_i . S
    y = y + torch.exp(a_cum).unsqueeze(-1) * (Cc.unsqueeze(2) @ starts.transpose(-1, -2))

    y = y.permute(0, 3, 4, 1, 2, 5).reshape(batch, nchunks * q, nheads, headdim)[:, :length]
    return _add_skip(y, x_unpadded, D.to(compute) if D is not None else None).to(out_dtype)


def ssd_sequential_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference recurrence, one step at a time (same shapes as `ssd_chunked`):
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t;  y_t = C_t h_t + D x_t.
    """
    batch, _, nheads, headdim = x.shape
    r = nheads // B.shape[2]
    decays = torch.exp(dt * A).unbind(1)  # unbind, not x[:, t]: its backward stays O(length)
    inputs = (dt.unsqueeze(-1) * x).unbind(1)
    Bs = B.repeat_interleave(r, dim=2).unbind(1)  # [b, h, n] per step
    Cs = C.repeat_interleave(r, dim=2).unbind(1)
    state = x.new_zeros(batch, nheads, headdim, B.shape[-1])
    ys = []
    for decay, u, B_t, C_t in zip(decays, inputs, Bs, Cs, strict=True):
        state = state * decay[..., None, None] + u.unsqueeze(-1) * B_t.unsqueeze(-2)
        ys.append((state @ C_t.unsqueeze(-1)).squeeze(-1))
    return _add_skip(torch.stack(ys, dim=1), x, D)


# --------------------------------------------------------------------------- modules


class GatedRMSNorm(nn.Module):
    """RMSNorm over groups of `group_size` channels, gated by SiLU(z) (mamba_ssm's RMSNormGated).

    norm_before_gate=False: norm(x * silu(z)) * weight; True: norm(x) * weight * silu(z).
    """

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5, norm_before_gate: bool = False,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.group_size = group_size
        self.eps = eps
        self.norm_before_gate = norm_before_gate

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x, gate = x.float(), F.silu(z.float())
        if not self.norm_before_gate:
            x = x * gate
        groups = x.unflatten(-1, (-1, self.group_size))
        x = (groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        x = x * self.weight.float()
        if self.norm_before_gate:
            x = x * gate
        return x.to(dtype)


class Mamba2(nn.Module):
    """Mamba2 mixer: [B, L, d_model] -> [B, L, d_model], causal, padding-aware.

    Parameter names, shapes and initialisation follow `mamba_ssm.modules.mamba2.Mamba2`
    (without its tensor-parallel and d_ssm options), so state dicts load either way.
    `use_mamba_ssm=False` forces the PyTorch path on CUDA (for comparisons).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        conv_init: float | None = None,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1, 16),
        D_has_hdim: bool = False,
        rmsnorm: bool = True,
        norm_before_gate: bool = False,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, float("inf")),
        bias: bool = False,
        conv_bias: bool = True,
        chunk_size: int = 256,
        use_mem_eff_path: bool = True,
        layer_idx: int | None = None,
        use_mamba_ssm: bool = True,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"Mamba2: expand * d_model ({d_inner}) must be divisible by headdim ({headdim})")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"Mamba2: the number of heads ({nheads}) must be divisible by ngroups ({ngroups})")
        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise ValueError(f"Mamba2: A_init_range must satisfy 0 < low <= high, got {A_init_range}")
        if chunk_size < 1:
            raise ValueError(f"Mamba2: chunk_size must be >= 1, got {chunk_size}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner, self.headdim, self.nheads, self.ngroups = d_inner, headdim, nheads, ngroups
        self.D_has_hdim, self.rmsnorm, self.norm_before_gate = D_has_hdim, rmsnorm, norm_before_gate
        self.dt_limit = tuple(dt_limit)
        self.chunk_size, self.use_mem_eff_path, self.layer_idx = chunk_size, use_mem_eff_path, layer_idx
        self.use_mamba_ssm = use_mamba_ssm

        # in_proj output order: [z, x, B, C, dt]; conv runs over xBC = [x, B, C]
        self.conv_dim = d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + nheads, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, kernel_size=d_conv, groups=self.conv_dim,
                                padding=d_conv - 1, bias=conv_bias, **factory)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)

        # dt_bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max]
        dt = torch.exp(torch.rand(nheads, **factory) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        A = torch.empty(nheads, dtype=torch.float32, device=device).uniform_(*A_init_range)
        self.A_log = nn.Parameter(torch.log(A).to(dtype=dtype))
        self.D = nn.Parameter(torch.ones(d_inner if D_has_hdim else nheads, device=device))
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True

        if rmsnorm:
            self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups, eps=1e-5,
                                     norm_before_gate=norm_before_gate, **factory)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias, **factory)

    def _path(self, on_cuda: bool) -> str:
        if on_cuda and self.use_mamba_ssm and _mamba_ssm_kernels() is not None:
            return MAMBA_SSM_PATH
        return PYTORCH_PATH

    @property
    def kernel_path(self) -> str:
        """Which implementation a forward on this module's current device runs."""
        return self._path(self.out_proj.weight.is_cuda)

    def _skip_weight(self) -> torch.Tensor:
        return self.D.view(self.nheads, self.headdim) if self.D_has_hdim else self.D

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, L, d_model]; mask: [B, L] bool, True = real token. Pad positions output 0."""
        if mask is not None and (mask.shape != x.shape[:2] or mask.dtype != torch.bool):
            raise ValueError(f"Mamba2: mask must be a bool tensor of shape {tuple(x.shape[:2])}, "
                             f"got {mask.dtype} {tuple(mask.shape)}")
        path = self._path(x.is_cuda)
        if not torch.compiler.is_compiling():
            _log_path_once(path)
        batch, length, _ = x.shape
        zxbcdt = self.in_proj(x)
        A = -torch.exp(self.A_log.float())

        if path == MAMBA_SSM_PATH and mask is None and self.use_mem_eff_path:
            return self._fused_kernel_forward(zxbcdt, A)

        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        if mask is not None:
            xBC = xBC.masked_fill(~mask.unsqueeze(-1), 0.0)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :length].transpose(1, 2))
        xs, B, C = torch.split(xBC, [self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        dt = F.softplus(dt.float() + self.dt_bias.float())
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.dt_limit)
        if mask is not None:
            dt = dt.masked_fill(~mask.unsqueeze(-1), 0.0)  # dt = 0: pads neither write nor decay the state

        xs = xs.unflatten(-1, (self.nheads, self.headdim))
        B = B.unflatten(-1, (self.ngroups, self.d_state))
        C = C.unflatten(-1, (self.ngroups, self.d_state))
        if path == MAMBA_SSM_PATH:
            chunk_scan = _mamba_ssm_kernels()[0]
            gate = None if self.rmsnorm else z.unflatten(-1, (self.nheads, self.headdim))
            y = chunk_scan(xs, dt, A, B, C, chunk_size=self.chunk_size, D=self._skip_weight(), z=gate)
            y = y.flatten(-2)
        else:
            y = ssd_chunked(xs, dt, A, B, C, self.chunk_size, D=self._skip_weight()).flatten(-2)
            if not self.rmsnorm:
                y = y * F.silu(z)
        if self.rmsnorm:
            y = self.norm(y, z)
        out = self.out_proj(y)
        if mask is not None:
            out = out.masked_fill(~mask.unsqueeze(-1), 0.0)
        return out

    def _fused_kernel_forward(self, zxbcdt: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
        """mamba_ssm's fused conv + scan + norm + out_proj kernel (no mask)."""
        fused = _mamba_ssm_kernels()[1]
        limit = {} if self.dt_limit == (0.0, float("inf")) else {"dt_limit": self.dt_limit}
        return fused(
            zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, A,
            D=self._skip_weight(), chunk_size=self.chunk_size, activation="silu",
            rmsnorm_weight=self.norm.weight if self.rmsnorm else None,
            rmsnorm_eps=self.norm.eps if self.rmsnorm else 1e-6,
            outproj_weight=self.out_proj.weight, outproj_bias=self.out_proj.bias,
            headdim=None if self.D_has_hdim else self.headdim, ngroups=self.ngroups,
            norm_before_gate=self.norm_before_gate, **limit,
        )
