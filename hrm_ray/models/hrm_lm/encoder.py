"""Prompt encoder: a stack of `transformer` (RoPE self-attention) or `mamba2` blocks, padding masked."""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from hrm_ray.models.hrm_lm.blocks import attention_block
from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.hrm_lm.mamba2 import Mamba2
from hrm_ray.models.layers import RMSNorm, Rotary, SwiGLU, gelu_matched_width, key_mask, padding_positions

logger = logging.getLogger(__name__)


class MambaBlock(nn.Module):
    """Pre-norm Mamba2 mixer + residual, then a pre-norm SwiGLU + residual."""

    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        m = cfg.mamba
        self.norm1, self.norm2 = RMSNorm(cfg.d_model, cfg.norm_eps), RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = Mamba2(cfg.d_model, d_state=m.d_state, d_conv=m.d_conv, expand=m.expand,
                            headdim=m.headdim, chunk_size=m.chunk_size)
        self.mlp = SwiGLU(cfg.d_model, gelu_matched_width(cfg.d_model, cfg.mlp_ratio), cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class Encoder(nn.Module):
    """Token embeddings [B, S, D] + mask [B, S] -> encoder states E [B, S, D] (pads zeroed)."""

    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        self.backend = cfg.encoder_backend
        if self.backend == "transformer":
            self.rotary = Rotary(cfg.d_model // cfg.n_heads, cfg.rope_theta)
            self.blocks = nn.ModuleList(attention_block(cfg) for _ in range(cfg.encoder_layers))
        elif self.backend == "mamba2":
            self.blocks = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.encoder_layers))
        else:
            raise ValueError(f"model.encoder_backend: unknown backend '{self.backend}' (transformer, mamba2)")
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self._logged_path: str | None = None

    @property
    def kernel_path(self) -> str:
        """What runs the encoder: 'transformer' or 'mamba2/<kernel path>'."""
        if self.backend == "mamba2":
            return f"mamba2/{self.blocks[0].mixer.kernel_path}" if len(self.blocks) else "mamba2/none"
        return "transformer"

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and self._logged_path != self.kernel_path:
            self._logged_path = self.kernel_path
            logger.info("encoder backend: %s", self._logged_path)
        if self.backend == "transformer":
            rope = self.rotary.cos_sin(padding_positions(mask))
            attn_mask = key_mask(mask)
            for block in self.blocks:
                x = block(x, rope=rope, mask=attn_mask)
        else:
            for block in self.blocks:
                x = block(x, mask)
        return self.norm(x) * mask.unsqueeze(-1)
