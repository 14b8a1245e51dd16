"""HRM ACT v1, the paper's puzzle model: two recurrent transformer modules with Q-learned halting.

A segment runs h_cycles x l_cycles updates on sequence-aligned states
    z_L <- L(z_L + (z_H + x))   (l_cycles times per cycle),   z_H <- H(z_H + z_L),
then decodes z_H. Only the last L and H update carry gradient (one-step gradient), or the whole
last H cycle when one_step_grad=False. The carry is detached between segments and kept across
batches: a slot that halts is reset and refilled with the next example of the incoming batch.
Halting (training): at halt_max_steps, or when q_halt > q_continue after an exploration-drawn
minimum number of steps; evaluation always runs halt_max_steps segments.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from hrm_ray.models.hrm_act_v1.config import HRMACTv1Config
from hrm_ray.models.layers import (
    CosSin,
    InjectionGate,
    LeCunLinear,
    ReasoningModule,
    injection_gate_stats,
    trunc_normal_,
)
from hrm_ray.models.puzzle import ACTCarry, Batch, PuzzleInputs, PuzzleModel, paper_block
from hrm_ray.models.puzzle.act import fresh_carry, halting, take_new_examples


@dataclass
class InnerCarry:
    z_H: torch.Tensor  # [B, P + L, D]
    z_L: torch.Tensor


def reasoning_module(c: HRMACTv1Config, layers: int) -> ReasoningModule:
    """The H or the L module: `layers` of the paper's blocks."""
    return ReasoningModule((paper_block(c) for _ in range(layers)), list_name="layers")


class HRMInner(PuzzleInputs):
    """One segment: embeddings, the H/L recurrence, LM head and Q head."""

    def __init__(self, config: HRMACTv1Config) -> None:
        super().__init__()
        self.config = c = config
        self.init_inputs(c)
        self.H_level = reasoning_module(c, c.h_layers)
        self.L_level = reasoning_module(c, c.l_layers)
        self.register_buffer("H_init", trunc_normal_(torch.empty(c.d_model), 1.0), persistent=True)
        self.register_buffer("L_init", trunc_normal_(torch.empty(c.d_model), 1.0), persistent=True)
        if c.use_gating:
            self.L_gate = InjectionGate(c.d_model, c.gate_hidden_ratio, c.gate_init_bias, linear=LeCunLinear)
            self.H_gate = InjectionGate(c.d_model, c.gate_hidden_ratio, c.gate_init_bias, linear=LeCunLinear)

        self.init_heads(c)

    def empty_carry(self, batch_size: int, device: torch.device) -> InnerCarry:
        shape = (batch_size, self.total_len, self.config.d_model)
        return InnerCarry(torch.zeros(shape, device=device), torch.zeros(shape, device=device))

    def reset_carry(self, reset: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        r = reset.view(-1, 1, 1)
        return InnerCarry(torch.where(r, self.H_init, carry.z_H), torch.where(r, self.L_init, carry.z_L))

    def _step_L(self, z_L: torch.Tensor, z_H: torch.Tensor, x: torch.Tensor, rope: CosSin | None,
                stats: dict | None) -> torch.Tensor:
        injection = z_H + x
        if not self.config.use_gating:
            return self.L_level(z_L, injection, rope=rope)
        g = self.L_gate(z_L, z_H, x)
        new = self.L_level(z_L, g * injection, rope=rope)
        if stats is not None:
            stats.update(injection_gate_stats("L", g, injection, new - z_L))
            if self.config.gate_reg_weight > 0:  # the mean gate, with its gradient, for the band penalty
                stats["reg_gate_L"] = g.float().mean()
        return new

    def _step_H(self, z_H: torch.Tensor, z_L: torch.Tensor, x: torch.Tensor, rope: CosSin | None,
                stats: dict | None) -> torch.Tensor:
        if not self.config.use_gating:
            return self.H_level(z_H, z_L, rope=rope)
        g = self.H_gate(z_H, z_L, x)
        new = self.H_level(z_H, g * z_L, rope=rope)
        if stats is not None:
            stats.update(injection_gate_stats("H", g, z_L, new - z_H))
            if self.config.gate_reg_weight > 0:  # the mean gate, with its gradient, for the band penalty
                stats["reg_gate_H"] = g.float().mean()
        return new

    def forward(self, carry: InnerCarry, batch: Batch
                ) -> tuple[InnerCarry, torch.Tensor, tuple[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]:
        c = self.config
        x = self.input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        rope = self.rope(x.device)
        last_h, last_l = c.h_cycles - 1, c.l_cycles - 1
        z_H, z_L = carry.z_H, carry.z_L

        with torch.no_grad():
            for h in range(c.h_cycles):
                for l_step in range(c.l_cycles):
                    if h < last_h or (c.one_step_grad and l_step < last_l):
                        z_L = self._step_L(z_L, z_H, x, rope, None)
                if h < last_h:
                    z_H = self._step_H(z_H, z_L, x, rope, None)

        stats: dict[str, torch.Tensor] = {}
        for _ in range(1 if c.one_step_grad else c.l_cycles):
            z_L = self._step_L(z_L, z_H, x, rope, stats)
        z_H = self._step_H(z_H, z_L, x, rope, stats)

        logits, q = self.heads(z_H)
        return InnerCarry(z_H.detach(), z_L.detach()), logits, q, stats


class HRMACTv1(PuzzleModel):
    """The ACT wrapper: carry management, halting and the bootstrapped Q target."""

    def __init__(self, config: HRMACTv1Config) -> None:
        super().__init__()
        self.config = config.validate()
        self.inner = HRMInner(config)

    def initial_carry(self, batch: Batch) -> ACTCarry:
        return fresh_carry(self.inner.empty_carry(batch["inputs"].shape[0], batch["inputs"].device), batch)

    def forward(self, carry: ACTCarry, batch: Batch) -> tuple[ACTCarry, dict[str, torch.Tensor]]:
        inner = self.inner.reset_carry(carry.halted, carry.inner)
        steps, data = take_new_examples(carry, batch)

        inner, logits, (q_halt, q_continue), stats = self.inner(inner, data)
        outputs = {"logits": logits, "q_halt_logits": q_halt, "q_continue_logits": q_continue, **stats}

        steps, halted, target = halting(steps, q_halt, q_continue, self.config, self.training,
                                        lambda: self.inner(inner, data)[2])
        if target is not None:
            outputs["target_q_continue"] = target
        return ACTCarry(inner, steps, halted, data), outputs

    def initial_value(self, name: str) -> float | None:
        """gate_init_bias: both injection gates' bias (none without gating)."""
        if name == "gate_init_bias" and self.config.use_gating:
            self.inner.L_gate.reset_bias()
            self.inner.H_gate.reset_bias()
            return self.config.gate_init_bias
        return None


def compile_units(model: HRMACTv1) -> list[str]:
    """`--compile`'s units (hrm_ray.train.compile): the L and H modules every cycle of every segment reuses,
    and the injection gates of the gated variant."""
    units = ["inner.L_level", "inner.H_level"]
    if model.config.use_gating:
        units += ["inner.L_gate", "inner.H_gate"]
    return units
