"""Bridge from the HRM's z_H into the decoder's cross-attention memory, scaled by a learned gate.

g = sigmoid(MLP([pooled z_H, pooled E]) + b) per example, b initialised to `gate_init_bias`; the
trainer's gate scale multiplies g. `residual`: memory = E + g * W z_H. `prefix`: memory =
[E ; g * P] with P prefix tokens pooled from z_H by learned queries; their attention logits also
get log g, so g -> 0 fades them out continuously and g = 0 removes them exactly (the memory is
then E alone, as in the model without the HRM).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from hrm_ray.models.hrm_lm.config import HRMLMConfig
from hrm_ray.models.hrm_lm.hrm_core import masked_mean


def memory_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S] bool -> additive attention bias [B, S]: 0 for real tokens, -inf for padding."""
    mask = mask | ~mask.any(-1, keepdim=True)  # an all-pad prompt would give NaN rows
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, -math.inf)


class Gate(nn.Module):
    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        hidden = max(1, round(cfg.bridge.gate_hidden_ratio * cfg.d_model))
        self.net = nn.Sequential(nn.Linear(2 * cfg.d_model, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.init_bias = cfg.bridge.gate_init_bias

    def reset_bias(self) -> None:
        nn.init.constant_(self.net[-1].bias, self.init_bias)

    def forward(self, z_H: torch.Tensor, E: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((masked_mean(z_H, mask), masked_mean(E, mask)), dim=-1)
        return torch.sigmoid(self.net(pooled).squeeze(-1).float())  # [B]


class Bridge(nn.Module):
    def __init__(self, cfg: HRMLMConfig) -> None:
        super().__init__()
        self.mode = cfg.bridge.mode
        d = cfg.d_model
        self.gate = Gate(cfg)
        if self.mode == "residual":
            self.proj = nn.Linear(d, d, bias=False)
        elif self.mode == "prefix":
            self.queries = nn.Parameter(torch.randn(cfg.bridge.prefix_tokens, d) * 0.02)
            self.key = nn.Linear(d, d, bias=False)
            self.proj = nn.Linear(d, d, bias=False)
        else:
            raise ValueError(f"model.bridge.mode: unknown mode '{self.mode}' (residual, prefix)")

    def prefix(self, z_H: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """P tokens pooled from z_H: each learned query attends over the real positions."""
        scores = torch.einsum("pd,bsd->bps", self.queries.to(z_H.dtype), self.key(z_H)) / math.sqrt(z_H.shape[-1])
        scores = scores + memory_bias(mask, scores.dtype)[:, None, :]
        return torch.softmax(scores, dim=-1) @ self.proj(z_H)

    def forward(self, E: torch.Tensor, mask: torch.Tensor, z_H: torch.Tensor, gate_scale: float | torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (memory [B, M, D], memory bias [B, M], raw gate g [B], effective gate g * scale [B])."""
        g = self.gate(z_H, E, mask)
        g_eff = g * gate_scale
        scale = g_eff.to(E.dtype)[:, None, None]
        bias = memory_bias(mask, E.dtype)
        if self.mode == "residual":
            return E + scale * self.proj(z_H), bias, g, g_eff
        prefix = scale * self.prefix(z_H, mask)
        # log g on the prefix logits; where() keeps the gradient finite when g_eff == 0
        log_g = torch.where(g_eff > 0, torch.log(g_eff.clamp_min(1e-30)), -math.inf).to(E.dtype)
        prefix_bias = log_g[:, None].expand(-1, prefix.shape[1])
        return torch.cat((E, prefix), dim=1), torch.cat((bias, prefix_bias), dim=1), g, g_eff
