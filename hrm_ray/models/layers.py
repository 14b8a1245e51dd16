"""Building blocks shared by the encoder, HRM core and decoder: RMSNorm, RoPE, SwiGLU, attention."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Rotary(nn.Module):
    """Rotary position embedding; `cos_sin(positions)` gives the tables for [B, L] positions."""

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.to(torch.float32).unsqueeze(-1) * self.inv_freq  # [B, L, Dh/2]
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)  # [B, 1, L, Dh]
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, L, Dh]; rotate-half formulation."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def padding_positions(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left- and right-padded prompts see the same RoPE phases."""
    return (mask.long().cumsum(-1) - 1).clamp_min(0)


def key_mask(mask: torch.Tensor) -> torch.Tensor:
    """[B, S] bool (True = real) -> [B, 1, 1, S] attention mask; an all-pad row attends everywhere
    (its outputs are masked later) instead of producing NaNs."""
    mask = mask | ~mask.any(-1, keepdim=True)
    return mask[:, None, None, :]


class SwiGLU(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = 8 * math.ceil(mlp_ratio * dim * 2 / 3 / 8)  # parameter count of a ratio-x GELU MLP
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.dropout(self.down(F.silu(gate) * up))


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


class Attention(nn.Module):
    """Multi-head attention through `scaled_dot_product_attention`.

    Self-attention applies RoPE to q and k; cross-attention (`cross=True`) reads keys/values
    from a memory and has no positions. `mask` is a bool (True = attend) or additive float
    mask broadcastable to [B, H, Lq, Lk].
    """

    def __init__(self, dim: int, n_heads: int, cross: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.cross = n_heads, dim // n_heads, cross
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def project_kv(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(source).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        is_causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        q = self._heads(self.q(x))
        if self.cross and cache is not None and cache.length:
            k, v = cache.k, cache.v  # memory K/V computed once per generation
        else:
            k, v = self.project_kv(memory if self.cross else x)
            if rope is not None:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            if cache is not None:
                if self.cross:
                    cache.k, cache.v, cache.length = k, v, k.shape[2]
                else:
                    k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(y.transpose(1, 2).flatten(-2))


class SelfAttentionBlock(nn.Module):
    """Bidirectional self-attention + SwiGLU over a padded sequence.

    Pre-norm (`post_norm=False`) for the encoder; post-norm for the HRM's recurrent modules
    as in the HRM paper, which keeps the repeatedly updated states on a fixed scale.
    """

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, dropout: float, eps: float,
                 post_norm: bool = False) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.norm1, self.norm2 = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.attn = Attention(dim, n_heads, dropout=dropout)
        self.mlp = SwiGLU(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.post_norm:
            x = self.norm1(x + self.attn(x, mask=mask, rope=rope))
            return self.norm2(x + self.mlp(x))
        x = x + self.attn(self.norm1(x), mask=mask, rope=rope)
        return x + self.mlp(self.norm2(x))
