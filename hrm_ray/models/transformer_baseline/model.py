"""The plain-transformer baseline of the puzzle HRM: the same embeddings, heads and number of blocks
(h_layers + l_layers post-norm blocks, applied once), without the H/L recurrence and without ACT.

It speaks the HRMACTv1 interface (initial_carry, forward(carry, batch) -> (carry, outputs)), so
ACTLossHead, the trainer and the evaluation run it unchanged: every slot halts after one segment.
The Q head is kept (it learns to predict whether the answer is right) so the loss terms match.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from hrm_ray.models.hrm_act_v1.model import Batch, HRMInner, reasoning_module
from hrm_ray.models.hrm_act_v1.puzzle_embedding import PuzzleEmbedding, puzzle_embeddings
from hrm_ray.models.transformer_baseline.config import TransformerBaselineConfig


@dataclass
class SingleStepCarry:
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: Batch


class BaselineInner(HRMInner):
    """HRMInner's embeddings and heads around one stack of h_layers + l_layers blocks.

    HRMInner builds its H and L modules first and they are dropped: the random draws of construction,
    and so the initial weights at a given seed, stay those of the HRM's."""

    def __init__(self, config: TransformerBaselineConfig) -> None:
        super().__init__(replace(config, use_gating=False))
        del self.H_level, self.L_level, self.H_init, self.L_init
        self.layers = reasoning_module(self.config, config.h_layers + config.l_layers)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        h = self.layers.run(x, rope=self.rope(x.device))
        q = self.q_head(h[:, 0]).float()
        return self.lm_head(h)[:, self.prefix_len:], (q[..., 0], q[..., 1])


class PuzzleTransformer(nn.Module):
    def __init__(self, config: TransformerBaselineConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.inner = BaselineInner(config)

    def initial_carry(self, batch: Batch) -> SingleStepCarry:
        b, device = batch["inputs"].shape[0], batch["inputs"].device
        return SingleStepCarry(torch.zeros(b, dtype=torch.int32, device=device),
                               torch.ones(b, dtype=torch.bool, device=device), batch)

    def forward(self, carry: SingleStepCarry, batch: Batch) -> tuple[SingleStepCarry, dict[str, torch.Tensor]]:
        logits, (q_halt, q_continue) = self.inner(batch)
        b = batch["inputs"].shape[0]
        done = SingleStepCarry(torch.ones(b, dtype=torch.int32, device=logits.device),
                               torch.ones(b, dtype=torch.bool, device=logits.device), batch)
        return done, {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}

    def parameter_groups(self) -> dict[str, list]:
        return {"sparse_embedding": puzzle_embeddings(self), "dense": list(self.parameters())}

    @property
    def puzzle_emb(self) -> PuzzleEmbedding | None:
        return self.inner.puzzle_emb
