"""Optimizers by name, with the decay / no-decay split (matrices decay; gains, biases do not)."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from hrm_ray.config import OptimConfig
from hrm_ray.errors import UserError
from hrm_ray.train.adam_atan2 import AdamATan2

OPTIMIZERS = ("adamw", "adamw_8bit", "adam_atan2")


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(params, cfg.weight_decay)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas)
    if cfg.optimizer == "adamw_8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise UserError(f"optim.optimizer: adamw_8bit needs bitsandbytes ({exc})") from None
        return bnb.optim.AdamW8bit(groups, lr=cfg.learning_rate, betas=betas)
    if cfg.optimizer == "adam_atan2":
        return AdamATan2(groups, lr=cfg.learning_rate, betas=betas)
    raise UserError(f"optim.optimizer: unknown optimizer '{cfg.optimizer}' (one of {', '.join(OPTIMIZERS)})")
