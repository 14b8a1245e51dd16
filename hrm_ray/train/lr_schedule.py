"""Learning rate as a function of the step: linear warmup, then cosine/linear decay floored, or constant."""
from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the base learning rate at `step` (0-based).

    Warmup rises linearly to 1 over `warmup_steps`; afterwards `cosine` and `linear` decay to
    `min_ratio` at `total_steps` and stay there (the floor holds for every schedule, also past the end).
    """
    if kind not in SCHEDULES:
        raise ValueError(f"optim.lr_scheduler: unknown schedule '{kind}' (one of {', '.join(SCHEDULES)})")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * shape


class LRSchedule:
    """Sets every param group's lr to `group['base_lr'] * lr_factor(step)`; stateless apart from the config."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], total_steps: int, warmup_steps: int,
                 kind: str, min_ratio: float):
        self.optimizers = optimizers
        self.total_steps, self.warmup_steps, self.kind, self.min_ratio = total_steps, warmup_steps, kind, min_ratio
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group.setdefault("base_lr", group["lr"])

    def factor(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup_steps, self.kind, self.min_ratio)

    def apply(self, step: int) -> float:
        """Set the lr for `step`; returns the first group's lr (for logging)."""
        factor = self.factor(step)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
        return self.optimizers[0].param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
                "kind": self.kind, "min_ratio": self.min_ratio}

    def load_state_dict(self, state: dict) -> None:
        """Continue a saved schedule: a resumed run decays over the steps it was started with, also when
        `--steps` was raised to train further (its lr then stays at the floor instead of jumping back up)."""
        if state["kind"] not in SCHEDULES:
            raise ValueError(f"saved lr schedule: unknown kind '{state['kind']}'")
        self.total_steps, self.warmup_steps = int(state["total_steps"]), int(state["warmup_steps"])
        self.kind, self.min_ratio = state["kind"], float(state["min_ratio"])
