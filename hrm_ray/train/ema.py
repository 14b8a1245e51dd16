"""Exponential moving average of model weights, for evaluation and checkpoints.

    ema = EMA(model, decay=0.999)
    ...after each optimizer step: ema.update(model)
    with ema.swapped_in(model):   # evaluate / save the averaged weights
        evaluate(model)
    state = ema.state_dict()      # goes into the checkpoint; ema.load_state_dict(state) on resume

Shadows are float32 copies of the parameters (and, with include_buffers, of floating buffers
such as a sparse puzzle embedding; the papers' code averages parameters only). Works on any
nn.Module, wrapped (DDP) or not.

The papers' EMA (warmup=False) starts from the initial weights with a constant decay, so after t updates
the initial weights still hold decay**t of the average (13.5% after 2,000 steps at 0.999): a short run's
EMA is close to its initialisation. warmup=True ramps the decay, decay_t = min(decay, (1 + t) / (10 + t)),
so the average covers roughly the last tenth of the steps taken until the decay reaches `decay`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


class EMA:
    def __init__(self, model: nn.Module, decay: float = 0.999, include_buffers: bool = False,
                 warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.include_buffers = include_buffers
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {k: t.detach().float().clone() for k, t in self._tracked(model)}

    def _tracked(self, model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        model = _unwrap(model)
        yield from ((k, p) for k, p in model.named_parameters() if p.requires_grad)
        if self.include_buffers:
            persistent = set(model.state_dict().keys())
            yield from ((k, b) for k, b in model.named_buffers() if b.is_floating_point() and k in persistent)

    def current_decay(self) -> float:
        """The decay of the latest update (of the first one before any)."""
        t = max(self.num_updates, 1)
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        keys, live = zip(*self._tracked(model), strict=True) if self.shadow else ((), ())
        shadows = [self.shadow[k] for k in keys]
        torch._foreach_lerp_(shadows, [t.float() for t in live], 1.0 - self.current_decay())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for k, t in self._tracked(model):
            t.copy_(self.shadow[k].to(t.dtype))

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights; the live weights come back afterwards."""
        backup = {k: t.detach().clone() for k, t in self._tracked(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, t in self._tracked(model):
                    t.copy_(backup[k])

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "include_buffers": self.include_buffers,
                "warmup": self.warmup, "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the shadows. A state saved with buffers loads into an EMA of parameters only (the
        buffers' shadows are dropped); which tensors are averaged, and the warm-up, stay this EMA's own
        settings (the update count comes from the state, so a resumed warm-up goes on where it was)."""
        saved = set(state["shadow"])
        differing = set(self.shadow) - saved
        if not (state.get("include_buffers") and not self.include_buffers):
            differing |= saved - set(self.shadow)
        if differing:
            raise ValueError(f"EMA state does not match the model: differing keys {sorted(differing)[:5]}")
        self.decay, self.num_updates = state["decay"], state["num_updates"]
        for k in self.shadow:
            self.shadow[k].copy_(state["shadow"][k])


class AveragedWeights:
    """A task's EMA hooks: `self.ema` (an EMA, or None when train.ema is off) is updated after every
    optimizer step, swapped in for validation and best-model/, and kept in checkpoints."""
    ema: EMA | None = None

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.ema is not None:
            self.ema.update(model)

    def eval_weights(self, model: nn.Module) -> contextlib.AbstractContextManager:
        return self.ema.swapped_in(model) if self.ema is not None else contextlib.nullcontext(model)

    def state_dict(self) -> dict:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
