"""What every puzzle model is built from: the input side (`PuzzleInputs`: token embeddings behind the puzzle
embedding prefix, positions) and the output heads of a family's inner module, and the outer model's
interface to the trainer (`PuzzleModel`: parameter groups, the puzzle embedding, initial values)."""
from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hrm_ray.models.layers import (
    Attention,
    CosSin,
    LeCunLinear,
    RMSNorm,
    Rotary,
    SelfAttentionBlock,
    SwiGLU,
    hrm_paper_width,
    trunc_normal_,
)
from hrm_ray.models.puzzle.embedding import PuzzleEmbedding, puzzle_embeddings


def paper_block(c: Any) -> SelfAttentionBlock:
    """The HRM paper's post-norm block (the TRM's too): fused qkv, LeCun init, parameter-free norms, SwiGLU in
    multiples of 256."""
    return SelfAttentionBlock(
        Attention(c.d_model, c.n_heads, fused_qkv=True, linear=LeCunLinear),
        SwiGLU(c.d_model, hrm_paper_width(c.d_model, c.mlp_ratio), linear=LeCunLinear),
        norm=partial(RMSNorm, c.d_model, c.norm_eps, weight=False),
        post_norm=True,
    )


class PuzzleInputs(nn.Module):
    """The puzzle models' input side: token embeddings behind a puzzle-embedding prefix of P positions, scaled by
    sqrt(d_model), with RoPE, learned or no positions (`pos_encodings`). A family's inner module derives from it
    and calls `init_inputs` first and `init_heads` after its own modules, so parameter names and the order of
    initial draws are the same in every family."""

    def init_inputs(self, c: Any) -> None:
        self.embed_scale = math.sqrt(c.d_model)
        embed_std = 1.0 / self.embed_scale
        self.prefix_len = c.prefix_len
        self.total_len = c.seq_len + self.prefix_len
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        trunc_normal_(self.embed_tokens.weight, embed_std)
        self.puzzle_emb = PuzzleEmbedding(c.num_puzzle_identifiers, c.puzzle_emb_ndim) if c.puzzle_emb_ndim else None
        if c.pos_encodings == "rope":
            self.rotary = Rotary(c.d_model // c.n_heads, c.rope_theta)
        elif c.pos_encodings == "learned":
            self.embed_pos = nn.Parameter(trunc_normal_(torch.empty(self.total_len, c.d_model), embed_std))

    def init_heads(self, c: Any) -> None:
        """The LM head and the Q head (halt, continue logits), Q starting near "never halt" so that training
        begins from long segments (the bootstrapping of halting, the full depth of deep supervision)."""
        self.lm_head = LeCunLinear(c.d_model, c.vocab_size, bias=False)
        self.q_head = LeCunLinear(c.d_model, 2, bias=True)
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

    def rope(self, device: torch.device) -> CosSin | None:
        """The fixed RoPE table of positions 0..P+L-1, or None without RoPE."""
        if self.config.pos_encodings != "rope":
            return None
        return self.rotary.cos_sin(torch.arange(self.total_len, device=device))

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        emb = self.embed_tokens(inputs)
        if self.puzzle_emb is not None:
            p = self.puzzle_emb(puzzle_identifiers).to(emb.dtype)
            p = F.pad(p, (0, self.prefix_len * self.config.d_model - p.shape[-1]))
            emb = torch.cat((p.view(-1, self.prefix_len, self.config.d_model), emb), dim=1)
        if self.config.pos_encodings == "learned":
            emb = 0.707106781 * (emb + self.embed_pos)  # keeps the forward variance
        return self.embed_scale * emb

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The answer's logits (the prefix dropped) and the (halt, continue) logits read at position 0."""
        q = self.q_head(h[:, 0]).float()
        return self.lm_head(h)[:, self.prefix_len:], (q[..., 0], q[..., 1])


class PuzzleModel(nn.Module):
    """The outer puzzle model: `config` and an `inner` PuzzleInputs module; ACTLossHead, the trainer and the
    evaluation run any subclass through `initial_carry` and `forward(carry, batch) -> (carry, outputs)`."""

    config: Any
    inner: PuzzleInputs

    def parameter_groups(self) -> dict[str, list]:
        """`sparse_embedding`: PuzzleEmbedding modules for sign-SGD; `dense`: every parameter."""
        return {"sparse_embedding": puzzle_embeddings(self), "dense": list(self.parameters())}

    @property
    def puzzle_emb(self) -> PuzzleEmbedding | None:
        return self.inner.puzzle_emb

    def apply_initial_values(self, names: Iterable[str]) -> dict[str, float]:
        """Set the parameters that the config's initial-value fields `names` (of INIT_VALUES) start, over any
        loaded weights: -> name: value, of each one the model has. A family with such fields overrides
        `initial_value`."""
        applied: dict[str, float] = {}
        for name in names:
            if name not in self.config.INIT_VALUES:
                known = ", ".join(self.config.INIT_VALUES) or "it has none"
                raise ValueError(f"{name}: not an initial value of this model ({known})")
            value = self.initial_value(name)
            if value is not None:
                applied[name] = value
        return applied

    def initial_value(self, name: str) -> float | None:
        """Reset the parameters initial-value field `name` starts; its value, or None where the model has none."""
        return None
