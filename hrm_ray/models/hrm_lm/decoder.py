"""Causal decoder: pre-norm blocks of RoPE self-attention, cross-attention to memory, SwiGLU."""
from __future__ import annotations

import torch
import torch.nn as nn

from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.layers import Attention, CosSin, KVCache, RMSNorm, Rotary, SwiGLU, gelu_matched_width


class DecoderBlock(nn.Module):
    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        d, eps = cfg.d_model, cfg.norm_eps
        self.norm1, self.norm2, self.norm3 = RMSNorm(d, eps), RMSNorm(d, eps), RMSNorm(d, eps)
        self.self_attn = Attention(d, cfg.n_heads, dropout=cfg.dropout)
        self.cross_attn = Attention(d, cfg.n_heads, cross=True, dropout=cfg.dropout)
        self.mlp = SwiGLU(d, gelu_matched_width(d, cfg.mlp_ratio), cfg.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                rope: CosSin, cache: tuple[KVCache, KVCache] | None = None
                ) -> torch.Tensor:
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = x + self.self_attn(self.norm1(x), rope=rope, is_causal=x.shape[1] > 1, cache=self_cache)
        x = x + self.cross_attn(self.norm2(x), memory=memory, mask=memory_mask, cache=cross_cache)
        return x + self.mlp(self.norm3(x))


class Decoder(nn.Module):
    """Embedded decoder inputs [B, T, D] -> final hidden states [B, T, D].

    `memory_bias` [B, M] is the additive cross-attention bias (0 real, -inf pad, log g for gated
    prefix tokens). With `caches` the call continues from `start_pos` (incremental decoding)."""

    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.rotary = Rotary(self.head_dim, cfg.rope_theta)
        self.blocks = nn.ModuleList(DecoderBlock(cfg) for _ in range(cfg.decoder_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)

    def new_caches(self, batch: int, capacity: int, like: torch.Tensor) -> list[tuple[KVCache, KVCache]]:
        empty = like.new_zeros(0)
        return [(KVCache.empty(batch, self.n_heads, capacity, self.head_dim, like), KVCache(empty, empty))
                for _ in self.blocks]

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_bias: torch.Tensor, start_pos: int = 0,
                caches: list[tuple[KVCache, KVCache]] | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        if caches is not None and length > 1 and caches[0][0].length:
            raise ValueError("the decoder cache takes one token at a time after the first call")
        positions = torch.arange(start_pos, start_pos + length, device=x.device).expand(batch, -1)
        rope = self.rotary.cos_sin(positions)
        mask = memory_bias[:, None, None, :].to(x.dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, memory, mask, rope, caches[i] if caches is not None else None)
        return self.norm(x)
