"""Gates on the injected inputs of the H and L modules (the "HRM with gating" variant).

Ungated: z_L <- L(z_L + (z_H + x)),      z_H <- H(z_H + z_L).
Gated:   z_L <- L(z_L + g_L * (z_H + x)), z_H <- H(z_H + g_H * z_L),
with g = sigmoid(MLP([z_primary, z_secondary, x]) + b) per position and channel. The carried
state keeps its identity path, so a closed gate (g = 0) leaves the module's input equal to its
own state instead of shrinking it.
"""
from __future__ import annotations

import torch
from torch import nn

from hrm_ray.models.puzzle.layers import Linear


class InjectionGate(nn.Module):
    def __init__(self, hidden_size: int, hidden_ratio: float, init_bias: float) -> None:
        super().__init__()
        inner = max(1, round(hidden_size * hidden_ratio))
        self.up = Linear(3 * hidden_size, inner, bias=True)
        self.down = Linear(inner, hidden_size, bias=True)
        # Zero output weights: every gate starts at exactly sigmoid(init_bias).
        nn.init.zeros_(self.down.weight)
        nn.init.constant_(self.down.bias, init_bias)

    def forward(self, primary: torch.Tensor, secondary: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat((primary, secondary, x), dim=-1)
        return torch.sigmoid(self.down(nn.functional.silu(self.up(h))))


@torch.no_grad()
def gate_stats(name: str, gate: torch.Tensor, injection: torch.Tensor, delta: torch.Tensor
               ) -> dict[str, torch.Tensor]:
    """Per-sample [B] gate diagnostics (summed over the batch by the loss head, no host sync).

    mean: average gate value; sat_low/sat_high: share of gates < 0.1 / > 0.9; contribution:
    norm of the gated injection over the norm of the state update it went into.
    """
    g = gate.float().flatten(1)
    gated = (gate * injection).float().flatten(1)
    return {
        f"gate_{name}_mean": g.mean(1),
        f"gate_{name}_sat_low": (g < 0.1).float().mean(1),
        f"gate_{name}_sat_high": (g > 0.9).float().mean(1),
        f"gate_{name}_contribution": gated.norm(dim=1) / delta.float().flatten(1).norm(dim=1).clamp_min(1e-8),
    }
