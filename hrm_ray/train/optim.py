"""Optimizers by name, with the decay / no-decay split (matrices decay; gains, biases do not unless
`decay_1d`, as the HRM and TRM papers' code, which decays every parameter)."""
from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from hrm_ray.config import OptimConfig
from hrm_ray.errors import UserError
from hrm_ray.train.adam_atan2 import AdamATan2

OPTIMIZERS = ("adamw", "adamw_8bit", "adam_atan2")


def param_groups(params: Iterable[nn.Parameter], weight_decay: float, decay_1d: bool = False) -> list[dict]:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if decay_1d or p.dim() >= 2]
    no_decay = [p for p in params if not decay_1d and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def fast_path(groups: list[dict]) -> dict[str, bool]:
    """AdamW's fused kernel when every parameter is on CUDA; elsewhere its foreach path (on CPU the same
    arithmetic as the per-tensor loop, bit for bit, in fewer dispatches; the fused CPU kernel is not)."""
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return {"fused": True} if on_cuda else {"foreach": True}


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig, decay_1d: bool = False
                    ) -> torch.optim.Optimizer:
    """Build it after the model is on its device: the fused/foreach choice follows the parameters."""
    groups = param_groups(params, cfg.weight_decay, decay_1d)
    betas = (cfg.beta1, cfg.beta2)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, **fast_path(groups))
    if cfg.optimizer == "adamw_8bit":
        # bitsandbytes warns on import that a 4-bit CPU kernel (unused here) is missing
        logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise UserError(f"optim.optimizer: adamw_8bit needs bitsandbytes ({exc})") from None
        return bnb.optim.AdamW8bit(groups, lr=cfg.learning_rate, betas=betas)
    if cfg.optimizer == "adam_atan2":
        return AdamATan2(groups, lr=cfg.learning_rate, betas=betas, foreach=True)
    raise UserError(f"optim.optimizer: unknown optimizer '{cfg.optimizer}' (one of {', '.join(OPTIMIZERS)})")
