"""HRM halting diagnostics as 0-dim tensors (no host sync): the trainer aggregates them per log window."""
from __future__ import annotations

import torch


def halting_distribution(halt_probs: torch.Tensor) -> torch.Tensor:
    """[B, C] per-cycle halting probabilities p -> [B, C] probability of halting at each cycle (ACT):
    w_n = p_n * prod_{m<n} (1 - p_m), and the last cycle takes what is left, so each row sums to 1."""
    survive = torch.cumprod(1.0 - halt_probs, dim=-1)
    before = torch.cat((torch.ones_like(survive[:, :1]), survive[:, :-1]), dim=-1)
    weights = before * halt_probs
    return torch.cat((weights[:, :-1], before[:, -1:]), dim=-1)


def halting_cycles(halt_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """[B, C] per-cycle halting probabilities -> [B] cycles the inference rule would run (the first
    cycle where the halting distribution's mass so far reaches `threshold`, else all C)."""
    below = (1.0 - torch.cumprod(1.0 - halt_probs, dim=-1) < threshold).sum(-1)
    return (below + 1).clamp_max(halt_probs.shape[-1])


def halt_stats(halt_probs: torch.Tensor, threshold: float) -> dict[str, torch.Tensor]:
    halt_sum = halt_probs.detach().float().sum(-1)
    return {
        "halt_sum_mean": halt_sum.mean(),
        "halt_sum_min": halt_sum.min(),
        "halt_sum_max": halt_sum.max(),
        "cycles_used": halting_cycles(halt_probs.detach(), threshold).float().mean(),
    }
