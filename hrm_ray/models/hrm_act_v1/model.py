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

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hrm_ray.models.hrm_act_v1.config import HRMACTv1Config
from hrm_ray.models.hrm_act_v1.puzzle_embedding import PuzzleEmbedding, puzzle_embeddings
from hrm_ray.models.layers import (
    Attention,
    CosSin,
    InjectionGate,
    LeCunLinear,
    ReasoningModule,
    RMSNorm,
    Rotary,
    SelfAttentionBlock,
    SwiGLU,
    hrm_paper_width,
    injection_gate_stats,
    trunc_normal_,
)

Batch = dict[str, torch.Tensor]


@dataclass
class InnerCarry:
    z_H: torch.Tensor  # [B, P + L, D]
    z_L: torch.Tensor


@dataclass
class ACTCarry:
    inner: InnerCarry
    steps: torch.Tensor              # [B] int32 segments run on the current example
    halted: torch.Tensor             # [B] bool: slot takes a new example next forward
    current_data: Batch              # the example each slot works on


def fresh_carry(inner: Any, batch: Batch) -> ACTCarry:
    """All slots halted, so the first forward loads the batch and resets every state (`inner`: the model's
    empty recurrent state)."""
    b, device = batch["inputs"].shape[0], batch["inputs"].device
    return ACTCarry(
        inner=inner,
        steps=torch.zeros(b, dtype=torch.int32, device=device),
        halted=torch.ones(b, dtype=torch.bool, device=device),
        current_data={k: torch.zeros_like(v) for k, v in batch.items()},
    )


def take_new_examples(carry: ACTCarry, batch: Batch) -> tuple[torch.Tensor, Batch]:
    """Halted slots take the batch's example and count their segments from 0: (steps, the slots' data)."""
    steps = torch.where(carry.halted, 0, carry.steps)
    data = {k: torch.where(carry.halted.view(-1, *([1] * (batch[k].ndim - 1))), batch[k], v)
            for k, v in carry.current_data.items()}
    return steps, data


def explore(halted: torch.Tensor, q_halt: torch.Tensor, steps: torch.Tensor, prob: float, max_steps: int
            ) -> torch.Tensor:
    """ACT exploration in training: with probability `prob` a slot must run a random 2..max_steps segments
    before it may halt."""
    explores = torch.rand_like(q_halt) < prob
    min_steps = explores * torch.randint_like(steps, low=2, high=max_steps + 1)
    return halted & (steps >= min_steps)


def paper_block(c: HRMACTv1Config) -> SelfAttentionBlock:
    """The paper's post-norm block: fused qkv, LeCun init, parameter-free norms, SwiGLU in multiples of 256."""
    return SelfAttentionBlock(
        Attention(c.d_model, c.n_heads, fused_qkv=True, linear=LeCunLinear),
        SwiGLU(c.d_model, hrm_paper_width(c.d_model, c.mlp_ratio), linear=LeCunLinear),
        norm=partial(RMSNorm, c.d_model, c.norm_eps, weight=False),
        post_norm=True,
    )


def reasoning_module(c: HRMACTv1Config, layers: int) -> ReasoningModule:
    return ReasoningModule((paper_block(c) for _ in range(layers)), list_name="layers")


class PuzzleInputs(nn.Module):
    """The puzzle models' input side: token embeddings behind a puzzle-embedding prefix of P positions, scaled by
    sqrt(d_model), with RoPE, learned or no positions (`pos_encodings`). A family's inner module derives from it
    and calls `init_inputs` first, so parameter names and the order of initial draws are the same in every
    family."""

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

        self.lm_head = LeCunLinear(c.d_model, c.vocab_size, bias=False)
        self.q_head = LeCunLinear(c.d_model, 2, bias=True)
        with torch.no_grad():  # Q starts near "never halt" so bootstrapping begins from long segments
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5.0)

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

        logits = self.lm_head(z_H)[:, self.prefix_len:]
        q = self.q_head(z_H[:, 0]).float()
        return InnerCarry(z_H.detach(), z_L.detach()), logits, (q[..., 0], q[..., 1]), stats


class HRMACTv1(nn.Module):
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

        with torch.no_grad():
            steps = steps + 1
            is_last = steps >= self.config.halt_max_steps
            halted = is_last
            if self.training and self.config.halt_max_steps > 1:
                halted = halted | (q_halt > q_continue)
                halted = explore(halted, q_halt, steps, self.config.halt_exploration_prob, self.config.halt_max_steps)
                # Bootstrapped target from the next segment (no replay buffer or target network:
                # the many parallel slots of a large batch play that role, as in PQN).
                _, _, (next_halt, next_continue), _ = self.inner(inner, data)
                outputs["target_q_continue"] = torch.sigmoid(
                    torch.where(is_last, next_halt, torch.maximum(next_halt, next_continue)))

        return ACTCarry(inner, steps, halted, data), outputs

    def apply_initial_values(self, names: Iterable[str]) -> dict[str, float]:
        """Set the parameters that the config's initial-value fields `names` (of INIT_VALUES) start, over any
        loaded weights: both injection gates' bias. -> name: value, of each one the model has."""
        applied: dict[str, float] = {}
        for name in names:
            if name not in self.config.INIT_VALUES:
                raise ValueError(f"{name}: not an initial value of this model ({', '.join(self.config.INIT_VALUES)})")
            if name == "gate_init_bias" and self.config.use_gating:
                self.inner.L_gate.reset_bias()
                self.inner.H_gate.reset_bias()
                applied[name] = self.config.gate_init_bias
        return applied

    def parameter_groups(self) -> dict[str, list]:
        """`sparse_embedding`: PuzzleEmbedding modules for sign-SGD; `dense`: every parameter."""
        return {"sparse_embedding": puzzle_embeddings(self), "dense": list(self.parameters())}

    @property
    def puzzle_emb(self) -> PuzzleEmbedding | None:
        return self.inner.puzzle_emb
