"""The Tiny Recursive Model (TRM): one small network applied recursively to a latent z and an answer y.

One improvement step (a segment of deep supervision) runs T = h_cycles repetitions of
    latent recursion:  n = l_cycles times  z <- net(z + (y + x)),  then once  y <- net(y + z),
the first T-1 without gradient and the last with it, then decodes y (lm_head) and reads the halting
logits (q_halt, q_continue) from y's first position. (y, z) are detached and carried to the next step
across batches, as the HRM's ACT carry: a slot that halts restarts from the initial y, z with the next
example. With no_act_continue (the paper's default) q_halt alone is trained, by BCE on exact correctness,
and training halts a slot when q_halt > 0; without it q_continue learns the HRM's bootstrapped target and
a slot halts when q_halt > q_continue. Either way halting waits for an exploration-drawn minimum of
steps, and comes at halt_max_steps; evaluation runs halt_max_steps steps.

The mixer block (token_mixer=mlp) is the paper's mlp-t block: its RMSNorm after the MLP over the
positions runs while the state is still transposed, so it normalises over the positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hrm_ray.models.layers import (
    CosSin,
    LeCunLinear,
    ReasoningModule,
    RMSNorm,
    SwiGLU,
    hrm_paper_width,
    trunc_normal_,
)
from hrm_ray.models.puzzle import ACTCarry, Batch, PuzzleInputs, PuzzleModel, paper_block
from hrm_ray.models.puzzle.act import fresh_carry, halting, take_new_examples
from hrm_ray.models.trm.config import TRMConfig


@dataclass
class RecursionState:
    y: torch.Tensor  # [B, P + L, D] the answer
    z: torch.Tensor  # [B, P + L, D] the latent reasoning


class MixerBlock(nn.Module):
    """Post-norm MLP-mixer block: an MLP across the positions (in place of attention), normalised across
    the positions, then an MLP across the channels, normalised across the channels. It takes (and
    ignores) rope/mask so a ReasoningModule runs it like an attention block."""

    def __init__(self, positions: int, c: TRMConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(positions, c.norm_eps, weight=False)
        self.norm2 = RMSNorm(c.d_model, c.norm_eps, weight=False)
        self.token_mlp = SwiGLU(positions, hrm_paper_width(positions, c.mlp_ratio), linear=LeCunLinear)
        self.mlp = SwiGLU(c.d_model, hrm_paper_width(c.d_model, c.mlp_ratio), linear=LeCunLinear)

    def forward(self, x: torch.Tensor, rope: CosSin | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        t = x.transpose(1, 2)                         # [B, D, positions]
        x = self.norm1(t + self.token_mlp(t)).transpose(1, 2)
        return self.norm2(x + self.mlp(x))


def trm_block(c: TRMConfig, positions: int) -> nn.Module:
    """The paper's post-norm block (as the HRM's) or, with token_mixer=mlp, the mixer block."""
    return MixerBlock(positions, c) if c.token_mixer == "mlp" else paper_block(c)


class TRMInner(PuzzleInputs):
    """One improvement step: embeddings, the deep recursion of the one network, LM head and halting head."""

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.init_inputs(c)
        self.net = ReasoningModule((trm_block(c, self.total_len) for _ in range(c.l_layers)), list_name="layers")
        self.register_buffer("y_init", trunc_normal_(torch.empty(c.d_model), 1.0), persistent=True)
        self.register_buffer("z_init", trunc_normal_(torch.empty(c.d_model), 1.0), persistent=True)
        self.init_heads(c)

    def empty_state(self, batch_size: int, device: torch.device) -> RecursionState:
        shape = (batch_size, self.total_len, self.config.d_model)
        return RecursionState(torch.zeros(shape, device=device), torch.zeros(shape, device=device))

    def reset_state(self, reset: torch.Tensor, state: RecursionState) -> RecursionState:
        r = reset.view(-1, 1, 1)
        return RecursionState(torch.where(r, self.y_init, state.y), torch.where(r, self.z_init, state.z))

    def latent_recursion(self, y: torch.Tensor, z: torch.Tensor, x: torch.Tensor, rope: CosSin | None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """n latent updates from the question, answer and latent, then one answer update."""
        for _ in range(self.config.l_cycles):
            z = self.net(z, y + x, rope=rope)
        return self.net(y, z, rope=rope), z

    def forward(self, state: RecursionState, batch: Batch
                ) -> tuple[RecursionState, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        rope = self.rope(x.device)
        y, z = state.y, state.z
        with torch.no_grad():
            for _ in range(self.config.h_cycles - 1):
                y, z = self.latent_recursion(y, z, x, rope)
        y, z = self.latent_recursion(y, z, x, rope)   # the only repetition gradients flow through
        logits, q = self.heads(y)
        return RecursionState(y.detach(), z.detach()), logits, q


class TRM(PuzzleModel):
    """Deep supervision over improvement steps, with the HRMACTv1 interface (initial_carry, forward(carry,
    batch) -> (carry, outputs)) so ACTLossHead, the puzzle task and the evaluation run it unchanged. With
    no `target_q_continue` in the outputs (no_act_continue) the loss head's halting loss is the BCE on
    correctness alone."""

    def __init__(self, config: TRMConfig) -> None:
        super().__init__()
        self.config = config.validate()
        self.inner = TRMInner(config)

    def initial_carry(self, batch: Batch) -> ACTCarry:
        return fresh_carry(self.inner.empty_state(batch["inputs"].shape[0], batch["inputs"].device), batch)

    def forward(self, carry: ACTCarry, batch: Batch) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        state = self.inner.reset_state(carry.halted, carry.inner)
        steps, data = take_new_examples(carry, batch)
        state, logits, (q_halt, q_continue) = self.inner(state, data)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue}
        alone = self.config.no_act_continue   # else the HRM's bootstrapped target from the next step
        steps, halted, target = halting(steps, q_halt, q_continue, self.config, self.training,
                                        None if alone else lambda: self.inner(state, data)[2], q_halt_alone=alone)
        if target is not None:
            outputs["target_q_continue"] = target
        return ACTCarry(state, steps, halted, data), outputs


def compile_units(model: TRM) -> list[str]:
    """`--compile`'s units (hrm_ray.train.compile): the one network of the recursion, which every latent and
    answer update of every repetition and improvement step reuses (one graph per grad mode, however deep)."""
    return ["inner.net"]
