"""HRM core (Wang et al. 2025): a slow high-level state z_H and a fast low-level state z_L over the
encoder positions. Per cycle, `l_cycles` updates z_L <- L(z_L + z_H + x), then z_H <- H(z_H + z_L).

One-step gradient: only the last L update and the H update of a supervised cycle carry gradient
(the paper's 1-step approximation of the fixed-point gradient); every other update runs under
no_grad. With deep supervision every cycle is supervised and the carry between cycles is detached; so it
is with halting, whose loss trains every cycle by its weight in the halting distribution (ACT): inference
may stop at any cycle, so every cycle's answer is trained.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from hrm_ray.models.hrm_lm.blocks import attention_block
from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.layers import ReasoningModule, Rotary, key_mask, padding_positions, trunc_normal_


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, S, D] averaged over the real positions of mask [B, S] -> [B, D]."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def reasoning_module(cfg: HRMLMConfig, layers: int) -> ReasoningModule:
    """The L or the H module: a small post-norm transformer stack."""
    return ReasoningModule((attention_block(cfg, post_norm=True) for _ in range(layers)), list_name="blocks")


@dataclass
class HRMOutput:
    z_H: list[torch.Tensor]  # the high-level state after each cycle run, [B, S, D] each
    final: torch.Tensor  # the state the bridge reads: the last cycle's, or each example's halting cycle's
    halt_probs: torch.Tensor | None  # [B, cycles run], per-cycle halting probability
    cycles_used: torch.Tensor  # [B] long: cycles each example used (h_cycles unless halted early)


class HRMCore(nn.Module):
    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        self.cfg = cfg.hrm
        d = cfg.d_model
        self.rotary = Rotary(d // cfg.n_heads, cfg.rope_theta)
        self.L = reasoning_module(cfg, cfg.hrm.l_layers)
        self.H = reasoning_module(cfg, cfg.hrm.h_layers)
        # Fixed random initial states, as in the paper: under the one-step gradient they would get no
        # gradient anyway (and parameters without gradients break DDP).
        self.register_buffer("z_L_init", trunc_normal_(torch.empty(d), std=1.0))
        self.register_buffer("z_H_init", trunc_normal_(torch.empty(d), std=1.0))
        self.halt_head = nn.Linear(d, 1) if cfg.hrm.use_halting else None  # zero-initialised by the model

    def halting_prob(self, z_H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.halt_head(masked_mean(z_H, mask)).squeeze(-1).float())

    def forward(self, x: torch.Tensor, mask: torch.Tensor, adaptive: bool = False) -> HRMOutput:
        """x: encoder states [B, S, D], mask [B, S]. `adaptive` (inference, halting on) stops each
        example at the first cycle where the halting distribution's mass so far reaches `halt_threshold`."""
        h = self.cfg
        rope = self.rotary.cos_sin(padding_positions(mask))
        attn_mask = key_mask(mask)
        z_L = self.z_L_init.to(x.dtype).expand_as(x)
        z_H = self.z_H_init.to(x.dtype).expand_as(x)
        adaptive = adaptive and self.halt_head is not None
        states, probs = [], []
        batch = x.shape[0]
        final, running = z_H, x.new_ones(batch, dtype=torch.float32)  # running: P(not halted yet)
        halted = torch.zeros(batch, dtype=torch.bool, device=x.device)
        cycles_used = torch.full((batch,), h.h_cycles, dtype=torch.long, device=x.device)
        for cycle in range(h.h_cycles):
            every_cycle = h.deep_supervision or self.halt_head is not None
            supervised = every_cycle or cycle == h.h_cycles - 1
            if every_cycle:
                z_L, z_H = z_L.detach(), z_H.detach()
            # The carried states are summed here, not inside the (possibly compiled) module: the initial
            # states are broadcast views, and a compiled module would recompile on their strides.
            for step in range(h.l_cycles):
                with torch.set_grad_enabled(self._grad(supervised and step == h.l_cycles - 1)):
                    z_L = self.L(z_L + z_H, x, rope=rope, mask=attn_mask)
            with torch.set_grad_enabled(self._grad(supervised)):
                z_H = self.H(z_H + z_L, rope=rope, mask=attn_mask)
            states.append(z_H)
            if self.halt_head is not None:
                probs.append(self.halting_prob(z_H, mask))
            if adaptive:
                running = running * (1.0 - probs[-1])
                stop = ~halted & ((1.0 - running >= h.halt_threshold) | (cycle == h.h_cycles - 1))
                final = torch.where(stop[:, None, None], z_H, final)
                cycles_used = torch.where(stop, cycle + 1, cycles_used)
                halted = halted | stop
                if bool(halted.all()):  # inference only: one host sync per cycle
                    break
        if not adaptive:
            final = z_H
        halt_probs = torch.stack(probs, dim=1) if probs else None
        return HRMOutput(states, final, halt_probs, cycles_used)

    def _grad(self, wanted: bool) -> bool:
        return torch.is_grad_enabled() and (wanted or not self.cfg.one_step_grad)
