"""AdamATan2 (Everett et al., 2024): Adam whose update is atan2(m̂, √v̂) instead of m̂ / (√v̂ + ε).

atan2 is bounded and scale-invariant, so there is no epsilon to tune and a zero second moment cannot
blow the update up. Weight decay is decoupled (AdamW style); the update is scaled by `a` with `b`
scaling the denominator (HRM uses a = b = 1). `foreach=True` (the default) updates a group's tensors with
multi-tensor ops (few kernel launches on CUDA); the arithmetic is the per-tensor loop's, op for op.
"""
from __future__ import annotations

import torch
from torch.optim import Optimizer


class AdamATan2(Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, a: float = 1.0, b: float = 1.0, foreach: bool = True):
        if lr < 0:
            raise ValueError(f"AdamATan2: lr must be >= 0, got {lr}")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"AdamATan2: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, a=a, b=b, foreach=foreach))

    def _state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group.get("foreach", False):
                self._foreach_group(group)
                continue
            beta1, beta2 = group["betas"]
            lr, weight_decay, a, b = group["lr"], group["weight_decay"], group["a"], group["b"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
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

    def _foreach_group(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        beta1, beta2 = group["betas"]
        lr, weight_decay, a, b = group["lr"], group["weight_decay"], group["a"], group["b"]
        grads = [p.grad for p in params]
        states = [self._state(p) for p in params]
        steps = [s["step"] for s in states]
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        torch._foreach_add_(steps, 1)
        if weight_decay:
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        m_hat = torch._foreach_div(exp_avgs, _one_minus_pow(beta1, steps))
        v_hat = torch._foreach_div(exp_avg_sqs, _one_minus_pow(beta2, steps))
        torch._foreach_sqrt_(v_hat)
        torch._foreach_mul_(v_hat, b)
        updates = [torch.atan2(m, v) for m, v in zip(m_hat, v_hat, strict=True)]  # no foreach atan2
        torch._foreach_add_(params, updates, alpha=-lr * a)


def _one_minus_pow(base: float, exponents: list[torch.Tensor]) -> list[torch.Tensor]:
    """[1 - base ** t for t in exponents], as tensors on the device (no host sync)."""
    powers = torch._foreach_pow(base, exponents)
    torch._foreach_neg_(powers)
    torch._foreach_add_(powers, 1.0)
    return powers
