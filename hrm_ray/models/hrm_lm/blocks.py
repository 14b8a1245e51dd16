"""The HRM x LM's self-attention block: separate q/kv projections, RMSNorm with weight, SwiGLU sized to
match a GELU MLP; pre-norm in the encoder, post-norm in the HRM's L and H modules."""
from __future__ import annotations

from functools import partial

from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.layers import Attention, RMSNorm, SelfAttentionBlock, SwiGLU, gelu_matched_width


def attention_block(cfg: HRMLMConfig, post_norm: bool = False) -> SelfAttentionBlock:
    d = cfg.d_model
    return SelfAttentionBlock(
        Attention(d, cfg.n_heads, dropout=cfg.dropout),
        SwiGLU(d, gelu_matched_width(d, cfg.mlp_ratio), cfg.dropout),
        norm=partial(RMSNorm, d, cfg.norm_eps),
        post_norm=post_norm,
    )
