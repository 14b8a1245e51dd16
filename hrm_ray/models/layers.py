"""Layers shared by every model family: init, norms, RoPE, SwiGLU, attention, blocks, reasoning modules, gates.

A family's own choices are passed in, not copied: the class of its linear layers (`nn.Linear`, whose
weights the HRM x LM re-initialises, or `LeCunLinear`, the HRM paper's), norms with or without a weight,
fused or separate q/kv projections, and the width rule of its SwiGLU.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

CosSin = tuple[torch.Tensor, torch.Tensor]
LinearFactory = Callable[..., nn.Linear]  # (in_features, out_features, bias=...) -> nn.Linear
SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9  # a gate below / above is counted as saturated


# --------------------------------------------------------------------------- init


def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """Normal truncated at two standard deviations, rescaled so the result has std `std`."""
    with torch.no_grad():
        nn.init.trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0)
        return t.mul_(std / 0.87962566103423978)


class LeCunLinear(nn.Linear):
    """Linear layer with truncated LeCun-normal weights and zero bias (drawn at construction)."""

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, std=1.0 / math.sqrt(self.in_features))
        if self.bias is not None:
            nn.init.zeros_(self.bias)


# --------------------------------------------------------------------------- norms


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Parameter-free RMSNorm computed in float32."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last axis; `weight=False` is the parameter-free `rms_norm` (no state at all)."""

    def __init__(self, dim: int, eps: float = 1e-5, weight: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return rms_norm(x, self.eps)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


# --------------------------------------------------------------------------- rotary position embedding


class Rotary(nn.Module):
    """Rotary position embedding: `cos_sin(positions)` gives float32 tables for positions [..., L].

    Positions [B, L] (per-example positions, e.g. over real tokens only) give [B, 1, L, Dh]; a fixed
    table is positions 0..L-1, `cos_sin(torch.arange(L))` -> [1, L, Dh]. Both broadcast over heads.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor) -> CosSin:
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [..., L, Dh/2]
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(-3)  # [..., 1, L, Dh]
        return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rope: CosSin) -> torch.Tensor:
    """x: [B, H, L, Dh]; rotate-half formulation, computed in float32."""
    cos, sin = rope
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * cos + torch.cat((-x2, x1), dim=-1) * sin).to(x.dtype)


def padding_positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left- and right-padded prompts see the same RoPE phases."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def key_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, S] bool (True = real) -> [B, 1, 1, S] attention mask; an all-pad row attends everywhere
    (its outputs are masked later) instead of producing NaNs."""
    mask = mask | ~mask.any(-1, keepdim=True)
    return mask[:, None, None, :]


# --------------------------------------------------------------------------- MLP


def gelu_matched_width(dim: int, mlp_ratio: float) -> int:
    """SwiGLU width with the parameter count of a ratio-x GELU MLP, rounded up to a multiple of 8 (HRM x LM)."""
    return 8 * math.ceil(mlp_ratio * dim * 2 / 3 / 8)


def hrm_paper_width(dim: int, mlp_ratio: float) -> int:
    """2/3 of ratio x dim, rounded, then up to a multiple of 256 (the HRM paper's sizing)."""
    return -(round(mlp_ratio * dim * 2 / 3) // -256) * 256


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, linear: LinearFactory = nn.Linear) -> None:
        super().__init__()
        self.gate_up = linear(dim, 2 * hidden, bias=False)
        self.down = linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.dropout(self.down(F.silu(gate) * up))


# --------------------------------------------------------------------------- attention


@dataclass
class KVCache:
    """Keys/values of one attention layer: preallocated for self-attention, fixed for cross-attention."""

    k: torch.Tensor  # [B, H, capacity, Dh]
    v: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, batch: int, heads: int, capacity: int, head_dim: int, like: torch.Tensor) -> KVCache:
        shape = (batch, heads, capacity, head_dim)
        return cls(like.new_zeros(shape), like.new_zeros(shape), 0)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def fill(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hold fixed keys/values (cross-attention's memory, computed once per generation)."""
        self.k, self.v, self.length = k, v, k.shape[2]
        return k, v


class Attention(nn.Module):
    """Multi-head attention through `scaled_dot_product_attention`.

    Self-attention projects q/k/v from x, either with one fused `qkv` layer (`fused_qkv=True`) or with
    `q` and `kv` layers, and applies RoPE to q and k when given; cross-attention (`cross=True`) reads
    keys/values from a memory and has no positions. `mask` is a bool (True = attend) or additive float
    mask broadcastable to [B, H, Lq, Lk]; `is_causal` applies when there is no mask.
    """

    def __init__(self, dim: int, n_heads: int, *, cross: bool = False, fused_qkv: bool = False,
                 dropout: float = 0.0, linear: LinearFactory = nn.Linear) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"d_model {dim} is not divisible by n_heads {n_heads}")
        if cross and fused_qkv:
            raise ValueError("cross-attention projects q and k/v from different inputs: it needs fused_qkv=False")
        self.n_heads, self.head_dim, self.cross, self.fused_qkv = n_heads, dim // n_heads, cross, fused_qkv
        if fused_qkv:
            self.qkv = linear(dim, 3 * dim, bias=False)
        else:
            self.q = linear(dim, dim, bias=False)
            self.kv = linear(dim, 2 * dim, bias=False)
        self.out = linear(dim, dim, bias=False)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def project(self, x: torch.Tensor, memory: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q from x; k, v from x (self-attention) or from memory (cross-attention); each [B, H, L, Dh]."""
        if self.fused_qkv:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q = self.q(x)
            k, v = self.kv(memory if self.cross else x).chunk(2, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        rope: CosSin | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        if self.cross and cache is not None and cache.length:
            q, k, v = self._heads(self.q(x)), cache.k, cache.v  # memory K/V computed once per generation
        else:
            q, k, v = self.project(x, memory)
            if rope is not None:
                q, k = apply_rope(q, rope), apply_rope(k, rope)
            if cache is not None:
                k, v = cache.fill(k, v) if self.cross else cache.append(k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).flatten(-2))


# --------------------------------------------------------------------------- blocks


class SelfAttentionBlock(nn.Module):
    """Self-attention + MLP with residuals, pre-norm or post-norm.

    Pre-norm (`post_norm=False`): x + attn(norm(x)), as in the LM's encoder. Post-norm: norm(x + attn(x)),
    as in the HRM's recurrent modules (the paper's choice), which keeps the repeatedly updated states on
    a fixed scale. `norm` makes each of the two norms (e.g. `partial(RMSNorm, dim, eps, weight=False)`).
    """

    def __init__(self, attn: Attention, mlp: nn.Module, norm: Callable[[], nn.Module], post_norm: bool = False
                 ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1, self.norm2 = norm(), norm()
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: torch.Tensor, rope: CosSin | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        if self.post_norm:
            x = self.norm1(x + self.attn(x, mask=mask, rope=rope))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x), mask=mask, rope=rope)
        return x + self.mlp(self.norm2(x))


class ReasoningModule(nn.Module):
    """The H or the L module of an HRM: a stack of blocks run on its state plus the injected inputs.

    forward(state, *injections) runs the blocks on `state + injections[0] + ...`, added in that order.
    `list_name` is the attribute (and parameter-name part) the blocks live under: each family keeps
    the names its checkpoints use ("blocks" for hrm_lm, "layers" for the puzzle families).
    """

    def __init__(self, blocks: Iterable[nn.Module], list_name: str = "blocks") -> None:
        super().__init__()
        self.list_name = list_name
        self.add_module(list_name, nn.ModuleList(blocks))

    @property
    def stack(self) -> nn.ModuleList:
        return getattr(self, self.list_name)

    def run(self, x: torch.Tensor, rope: CosSin | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The blocks alone, without an injection."""
        for block in self.stack:
            x = block(x, rope=rope, mask=mask)
        return x

    def forward(self, state: torch.Tensor, *injections: torch.Tensor, rope: CosSin | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        for injection in injections:
            state = state + injection
        return self.run(state, rope=rope, mask=mask)


# --------------------------------------------------------------------------- gates


class InjectionGate(nn.Module):
    """Gate on the injected input of an H or L module (the "HRM with gating" variant).

    Ungated: z_L <- L(z_L + (z_H + x)),      z_H <- H(z_H + z_L).
    Gated:   z_L <- L(z_L + g_L * (z_H + x)), z_H <- H(z_H + g_H * z_L),
    with g = sigmoid(MLP([z_primary, z_secondary, x]) + b) per position and channel. The carried state
    keeps its identity path, so a closed gate (g = 0) leaves the module's input equal to its own state.
    """

    def __init__(self, dim: int, hidden_ratio: float, init_bias: float, linear: LinearFactory = nn.Linear) -> None:
        super().__init__()
        inner = max(1, round(dim * hidden_ratio))
        self.up = linear(3 * dim, inner, bias=True)
        self.down = linear(inner, dim, bias=True)
        # Zero output weights: every gate starts at exactly sigmoid(init_bias).
        nn.init.zeros_(self.down.weight)
        self.init_bias = init_bias
        self.reset_bias()

    def reset_bias(self) -> None:
        nn.init.constant_(self.down.bias, self.init_bias)

    def forward(self, primary: torch.Tensor, secondary: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat((primary, secondary, x), dim=-1)
        return torch.sigmoid(self.down(F.silu(self.up(h))))


def gate_band_penalty(mean_gate: torch.Tensor, band: Iterable[float]) -> torch.Tensor:
    """Squared distance of a mean gate outside the openness band [low, high] (0 inside it).

    The opposite of min(g, 1 - g)^2, which is largest at g = 0.5 and so pushes gates toward 0 or 1: this
    pulls a gate that has closed or saturated back toward the band and leaves it free inside."""
    low, high = band
    return (F.relu(low - mean_gate) + F.relu(mean_gate - high)).pow(2)


def bridge_gate_stats(gate: torch.Tensor) -> dict[str, torch.Tensor]:
    """Batch summary (0-dim tensors, no host sync) of a per-example gate [B], e.g. the HRM x LM bridge's
    effective gate (g times the gate scale)."""
    gate = gate.detach().float()
    return {
        "gate_mean": gate.mean(),
        "gate_min": gate.min(),
        "gate_max": gate.max(),
        "gate_sat_low": (gate < SATURATION_LOW).float().mean(),
        "gate_sat_high": (gate > SATURATION_HIGH).float().mean(),
    }


@torch.no_grad()
def injection_gate_stats(level: str, gate: torch.Tensor, injection: torch.Tensor, delta: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
    """Per-sample [B] diagnostics of the InjectionGate of module `level` ("H" or "L"), summed over the
    batch by the loss head (no host sync).

    mean: average gate value; sat_low/sat_high: share of gates < 0.1 / > 0.9; contribution: norm of
    the gated injection over the norm of the state update it went into.
    """
    g = gate.float().flatten(1)
    gated = (gate * injection).float().flatten(1)
    return {
        f"gate_{level}_mean": g.mean(1),
        f"gate_{level}_sat_low": (g < SATURATION_LOW).float().mean(1),
        f"gate_{level}_sat_high": (g > SATURATION_HIGH).float().mean(1),
        f"gate_{level}_contribution": gated.norm(dim=1) / delta.float().flatten(1).norm(dim=1).clamp_min(1e-8),
    }
