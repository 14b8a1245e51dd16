"""Building blocks of the puzzle HRM: post-norm transformer blocks and the sparse puzzle embedding."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CosSin = tuple[torch.Tensor, torch.Tensor]


def trunc_normal_(t: torch.Tensor, std: float) -> torch.Tensor:
    """Normal truncated at two standard deviations, rescaled so the result has std `std`."""
    with torch.no_grad():
        nn.init.trunc_normal_(t, mean=0.0, std=1.0, a=-2.0, b=2.0)
        return t.mul_(std / 0.87962566103423978)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Parameter-free RMSNorm computed in float32."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)).to(x.dtype)


class Linear(nn.Linear):
    """Linear layer with truncated LeCun-normal weights and zero bias."""

    def reset_parameters(self) -> None:
        trunc_normal_(self.weight, std=1.0 / math.sqrt(self.in_features))
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_positions: int, base: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos, self.sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos_sin: CosSin) -> torch.Tensor:
    """x: [B, H, S, D]; cos/sin: [S, D]."""
    cos, sin = cos_sin
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


class Attention(nn.Module):
    """Non-causal multi-head self-attention (the puzzle is seen whole)."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out = Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if cos_sin is not None:
            q, k = apply_rope(q, cos_sin), apply_rope(k, cos_sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


def swiglu_width(hidden_size: int, expansion: float) -> int:
    """2/3 of expansion x hidden, rounded up to a multiple of 256 (the paper's sizing)."""
    return -(round(expansion * hidden_size * 2 / 3) // -256) * 256


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float) -> None:
        super().__init__()
        inner = swiglu_width(hidden_size, expansion)
        self.gate_up = Linear(hidden_size, 2 * inner, bias=False)
        self.down = Linear(inner, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class PostNormBlock(nn.Module):
    """x = norm(x + attn(x)); x = norm(x + mlp(x)) — post-norm keeps the recurrent state bounded."""

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, eps: float) -> None:
        super().__init__()
        self.attn = Attention(hidden_size, num_heads)
        self.mlp = SwiGLU(hidden_size, expansion)
        self.eps = eps

    def forward(self, x: torch.Tensor, cos_sin: CosSin | None) -> torch.Tensor:
        x = rms_norm(x + self.attn(x, cos_sin), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


class PuzzleEmbedding(nn.Module):
    """Per-puzzle embedding trained sparsely by sign-SGD (hrm_ray.train.sign_sgd).

    The table is a persistent buffer, not a parameter: dense optimisers and DDP never see it.
    In a training forward with grad enabled, the looked-up rows become a fresh leaf tensor
    (`local`) whose gradient, with `local_ids`, is what the sign-SGD step applies.
    """

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.0) -> None:
        super().__init__()
        weights = torch.zeros(num_embeddings, dim)
        if init_std > 0:
            trunc_normal_(weights, init_std)
        self.register_buffer("weights", weights, persistent=True)
        self.local: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids]
        if not (self.training and torch.is_grad_enabled()):
            return rows
        self.local = rows.detach().requires_grad_(True)
        self.local_ids = ids.detach()
        return self.local


def puzzle_embeddings(module: nn.Module) -> list[PuzzleEmbedding]:
    """Every PuzzleEmbedding inside `module` (works through DDP and loss wrappers)."""
    return [m for m in module.modules() if isinstance(m, PuzzleEmbedding)]
