"""HRM diagnostics as 0-dim tensors (no host sync): the trainer aggregates them per log window."""
from __future__ import annotations

import torch

SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9


def gate_stats(gate: torch.Tensor) -> dict[str, torch.Tensor]:
    """gate: [B] effective gate (g times the gate scale)."""
    gate = gate.detach().float()
    return {
        "gate_mean": gate.mean(),
        "gate_min": gate.min(),
        "gate_max": gate.max(),
        "gate_sat_low": (gate < SATURATION_LOW).float().mean(),
        "gate_sat_high": (gate > SATURATION_HIGH).float().mean(),
    }


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
