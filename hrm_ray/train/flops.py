"""Training FLOPs per step, counted once per run with `torch.utils.flop_counter.FlopCounterMode` on one
training step (forward and backward of every micro-batch of this rank), so runs of different models can be
compared at equal compute. The optimizer's own arithmetic is not counted (elementwise, small)."""
from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


def counted(step: Callable[[], None]) -> int:
    """Run `step` once under a FLOP counter; its FLOPs on this rank."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def flops_record(rank_flops: int, world_size: int) -> dict[str, float]:
    """The metrics.jsonl fields: FLOPs of one global step (every rank) and of this rank's share."""
    return {"flops_per_step": float(rank_flops * world_size), "flops_per_rank_step": float(rank_flops)}
