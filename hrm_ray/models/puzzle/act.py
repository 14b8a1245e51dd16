"""The ACT carry of the puzzle families: one slot per batch row that keeps its example and recurrent state
across segments (and batches) until it halts, then takes the next example of the incoming batch."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Batch = dict[str, torch.Tensor]


@dataclass
class ACTCarry:
    inner: Any                       # the family's recurrent state (HRM: z_H, z_L; TRM: y, z)
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


@torch.no_grad()
def halting(steps: torch.Tensor, q_halt: torch.Tensor, q_continue: torch.Tensor, c: Any, training: bool,
            next_q: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None, q_halt_alone: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """After a segment: (steps + 1, which slots halt, the bootstrapped Q-continue target or None).

    A slot halts at c.halt_max_steps; in training also when q_halt > q_continue (> 0 with `q_halt_alone`), once
    it has run the exploration-drawn minimum of segments. `next_q` runs the next segment's Q head for the target
    sigmoid(q_halt' at the last step, else max(q_halt', q_continue')) (no replay buffer or target network: the
    many parallel slots of a large batch play that role, as in PQN)."""
    steps = steps + 1
    is_last = steps >= c.halt_max_steps
    halted, target = is_last, None
    if training and c.halt_max_steps > 1:
        halted = halted | (q_halt > 0 if q_halt_alone else q_halt > q_continue)
        halted = explore(halted, q_halt, steps, c.halt_exploration_prob, c.halt_max_steps)
        if next_q is not None:
            next_halt, next_continue = next_q()
            target = torch.sigmoid(torch.where(is_last, next_halt, torch.maximum(next_halt, next_continue)))
    return steps, halted, target
