"""HRM halting diagnostics as 0-dim tensors (no host sync): the trainer aggregates them per log window."""
from __future__ import annotations

import torch


def halting_cycles(halt_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B, C] per-cycle halting probabilities -> [B] cycles the inference rule would run
    (the first cycle whose cumulative probability reaches `threshold`, else all C)."""
    below = (halt_probs.cumsum(-1) < threshold).sum(-1)
    return (below + 1).clamp_max(halt_probs.shape[-1])


def halt_stats(halt_probs: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    halt_sum = halt_probs.detach().float().sum(-1)
    return {
        "halt_sum_mean": halt_sum.mean(),
        "halt_sum_min": halt_sum.min(),
        "halt_sum_max": halt_sum.max(),
        "cycles_used": halting_cycles(halt_probs.detach(), threshold).float().mean(),
    }
