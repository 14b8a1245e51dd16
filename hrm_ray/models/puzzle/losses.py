"""Losses and metrics of the puzzle families: stablemax/softmax cross-entropy and the ACT Q losses."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hrm_ray.models.layers import gate_band_penalty

IGNORE_LABEL_ID = -100
# Metrics that are sums over halted sequences: divide by `count` after aggregation.
COUNT_METRICS = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")


def _stablemax_s(x: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) below: positive, monotone, linear growth (no exp)."""
    return torch.where(x < 0, 1 / (1 - x + eps), x + 1)


def log_stablemax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    s = _stablemax_s(x)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def stablemax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
                            ) -> torch.Tensor:
    """Per-token loss [B, L] (0 where ignored), computed in float64 (float32 on MPS)."""
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    logp = log_stablemax(logits.to(dtype), dim=-1)
    valid = labels != ignore_index
    picked = logp.gather(-1, torch.where(valid, labels, 0).long().unsqueeze(-1)).squeeze(-1)
    return -torch.where(valid, picked, 0)


def softmax_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_LABEL_ID
                          ) -> torch.Tensor:
    """Per-token loss [B, L] (0 where ignored), computed in float32."""
    flat = F.cross_entropy(logits.float().flatten(0, -2), labels.long().flatten(), ignore_index=ignore_index,
                           reduction="none")
    return flat.view(labels.shape)


LOSSES = {"stablemax_cross_entropy": stablemax_cross_entropy, "softmax_cross_entropy": softmax_cross_entropy}


class ACTLossHead(nn.Module):
    """Wraps a puzzle model (HRMACTv1, TRM, ...): one segment forward -> (carry, loss, metric sums, all halted).

    loss = (sum_seq mean_token CE + 0.5 * (BCE(q_halt, seq correct) + BCE(q_continue, target))) / B.
    Metrics are float32 tensors summed over the batch (no host sync); `reduce_metrics` turns summed
    values (across steps or workers) into means.
    """

    def __init__(self, model: nn.Module, loss_type: str = "stablemax_cross_entropy", q_loss_weight: float = 0.5):
        super().__init__()
        if loss_type not in LOSSES:
            raise ValueError(f"unknown loss_type {loss_type!r}; choose from {', '.join(LOSSES)}")
        self.model = model
        self.loss_fn = LOSSES[loss_type]
        self.q_loss_weight = q_loss_weight

    def initial_carry(self, batch):
        return self.model.initial_carry(batch)

    def parameter_groups(self) -> dict[str, list]:
        return self.model.parameter_groups()

    def apply_initial_values(self, names: Iterable[str]) -> dict[str, float]:
        return self.model.apply_initial_values(names)

    def forward(self, carry, batch: dict[str, torch.Tensor], return_outputs: bool = False):
        new_carry, outputs = self.model(carry, batch)
        labels = new_carry.current_data["labels"]
        logits = outputs["logits"]

        with torch.no_grad():
            mask = labels != IGNORE_LABEL_ID
            counts = mask.sum(-1)
            divisor = counts.clamp_min(1).unsqueeze(-1)
            correct = mask & (logits.argmax(-1) == labels)
            seq_correct = correct.sum(-1) == counts
            valid = new_carry.halted & (counts > 0)   # metrics count finished sequences only
            metrics = {
                "count": valid.sum(),
                "accuracy": torch.where(valid, (correct.float() / divisor).sum(-1), 0).sum(),
                "exact_accuracy": (valid & seq_correct).sum(),
                "q_halt_accuracy": (valid & ((outputs["q_halt_logits"] >= 0) == seq_correct)).sum(),
                "steps": torch.where(valid, new_carry.steps, 0).sum(),
                "samples": torch.full((), labels.shape[0], device=labels.device),  # no host-to-device copy
            }

        lm_loss = (self.loss_fn(logits, labels) / divisor).sum()
        q_halt_loss = F.binary_cross_entropy_with_logits(
            outputs["q_halt_logits"], seq_correct.to(outputs["q_halt_logits"].dtype), reduction="sum")
        q_continue_loss = torch.zeros((), device=logits.device)
        if "target_q_continue" in outputs:
            q_continue_loss = F.binary_cross_entropy_with_logits(
                outputs["q_continue_logits"], outputs["target_q_continue"], reduction="sum")
        metrics.update(lm_loss=lm_loss.detach(), q_halt_loss=q_halt_loss.detach(),
                       q_continue_loss=q_continue_loss.detach())
        metrics.update({k: v.sum() for k, v in outputs.items() if k.startswith("gate_")})

        loss = ((lm_loss + self.q_loss_weight * (q_halt_loss + q_continue_loss)) / labels.shape[0]).float()
        reg_weight = getattr(self.model.config, "gate_reg_weight", 0.0)
        if reg_weight > 0 and "reg_gate_H" in outputs:  # the gated variant's H and L gates
            band = self.model.config.gate_reg_band
            penalty = sum(gate_band_penalty(outputs[f"reg_gate_{level}"], band) for level in ("H", "L"))
            loss = loss + reg_weight * penalty
            metrics["gate_reg_loss"] = penalty.detach() * labels.shape[0]  # a sum over the batch, as the others
        metrics = {k: v.float() for k, v in metrics.items()}
        all_halted = new_carry.halted.all()
        if return_outputs:
            return new_carry, loss, metrics, all_halted, {k: v.detach() for k, v in outputs.items()}
        return new_carry, loss, metrics, all_halted


def reduce_metrics(sums: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """Summed metrics -> means: COUNT_METRICS per halted sequence, the rest (losses, gates) per sample."""
    values = {k: float(v) for k, v in sums.items()}
    count, samples = max(values.get("count", 0.0), 1.0), max(values.get("samples", 0.0), 1.0)
    out = {}
    for k, v in values.items():
        if k in ("count", "samples"):
            out[k] = v
        else:
            out[k] = v / (count if k in COUNT_METRICS else samples)
    return out
