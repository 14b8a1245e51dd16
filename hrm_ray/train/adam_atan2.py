"""AdamATan2 (Everett et al., 2024): Adam whose update is atan2(m̂, √v̂) instead of m̂ / (√v̂ + ε).

atan2 is bounded and scale-invariant, so there is no epsilon to tune and a zero second moment cannot
blow the update up. Weight decay is decoupled (AdamW style); the update is scaled by `a` with `b`
scaling the denominator (HRM uses a = b = 1).
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class AdamATan2(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, a: float = 1.0, b: float = 1.0):
        if lr < 0:
            raise ValueError(f"AdamATan2: lr must be >= 0, got {lr}")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"AdamATan2: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, a=a, b=b))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, weight_decay, a, b = group["lr"], group["weight_decay"], group["a"], group["b"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                if weight_decay:
                    p.mul_(1.0 - lr * weight_decay)
                exp_avg.lerp_(p.grad, 1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1.0 - beta2)
                m_hat = exp_avg / (1.0 - beta1 ** t)
                v_hat = exp_avg_sq / (1.0 - beta2 ** t)
                p.add_(torch.atan2(m_hat, b * v_hat.sqrt()), alpha=-lr * a)
        return loss
