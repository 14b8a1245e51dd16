"""The plain-transformer baseline of the puzzle HRM: the same embeddings, heads and number of blocks
(h_layers + l_layers post-norm blocks, applied once), without the H/L recurrence and without ACT.

It speaks the puzzle models' interface (initial_carry, forward(carry, batch) -> (carry, outputs)), so
ACTLossHead, the trainer and the evaluation run it unchanged: every slot halts after one segment.
The Q head is kept (it learns to predict whether the answer is right) so the loss terms match.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm_ray.models.hrm_act_v1.model import reasoning_module
from hrm_ray.models.layers import trunc_normal_
from hrm_ray.models.puzzle import Batch, PuzzleInputs, PuzzleModel
from hrm_ray.models.transformer_baseline.config import TransformerBaselineConfig


@dataclass
class SingleStepCarry:
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: Batch


def hrm_recurrence_draws(c: TransformerBaselineConfig) -> list[int]:
    """The sizes of the random draws the HRM makes for its H and L modules and their initial states, in order
    (the modules built on the meta device, where nothing is drawn)."""
    with torch.device("meta"):
        blocks = [p.numel() for p in reasoning_module(c, c.h_layers + c.l_layers).parameters()]
    return [*blocks, c.d_model, c.d_model]


class BaselineInner(PuzzleInputs):
    """The HRM's embeddings and heads around one stack of h_layers + l_layers blocks.

    Between the embeddings and the heads the generator advances by the draws of the HRM's H and L modules
    (`hrm_recurrence_draws`), each draw as the HRM makes it (its size decides how many numbers it takes): at
    a given seed the baseline's embeddings and heads are the HRM's, and its initial weights those it always
    had."""

    def __init__(self, config: TransformerBaselineConfig) -> None:
        super().__init__()
        self.config = c = config
        self.init_inputs(c)
        for size in hrm_recurrence_draws(c):
            trunc_normal_(torch.empty(size), 1.0)
        self.init_heads(c)
        self.layers = reasoning_module(c, c.h_layers + c.l_layers)

    def forward(self, batch: Batch) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        return self.heads(self.layers.run(x, rope=self.rope(x.device)))


class PuzzleTransformer(PuzzleModel):
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


def compile_units(model: PuzzleTransformer) -> list[str]:
    """`--compile`'s units (hrm_ray.train.compile): each block of the stack."""
    return [f"inner.layers.layers.{i}" for i in range(len(model.inner.layers.layers))]
