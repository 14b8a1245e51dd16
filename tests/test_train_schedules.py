"""LR schedules (floor for every kind), gate schedule, optimizers (AdamATan2, 8-bit AdamW on CPU)."""
from __future__ import annotations

import math

import pytest
import torch

from hrm_ray.config import OptimConfig
from hrm_ray.train.adam_atan2 import AdamATan2
from hrm_ray.train.gate_schedule import gate_closed, gate_scale
from hrm_ray.train.lr_schedule import LRSchedule, lr_factor
from hrm_ray.train.optim import build_optimizer


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
@pytest.mark.parametrize("min_ratio", [0.0, 0.05, 0.3])
def test_lr_floor_holds_for_every_schedule(kind, min_ratio):
    total, warmup = 200, 20
    factors = [lr_factor(s, total, warmup, kind, min_ratio) for s in range(2 * total)]
    assert factors[0] == pytest.approx(1 / warmup) and factors[warmup - 1] == pytest.approx(1.0)
    after = factors[warmup:]
    assert min(after) >= min_ratio - 1e-12
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:], strict=False))  # never rises after warmup
    if kind == "constant":
        assert set(after) == {1.0}
    else:
        assert factors[total] == pytest.approx(min_ratio) and factors[-1] == pytest.approx(min_ratio)
        assert factors[warmup + (total - warmup) // 2] > min_ratio + 0.3 * (1 - min_ratio)


def test_lr_schedule_sets_every_group():
    params = [torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))]
    opt = torch.optim.AdamW([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=1.0)
    schedule = LRSchedule([opt], 10, 0, "linear", 0.1)
    schedule.apply(10)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.05])


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="optim.lr_scheduler"):
        lr_factor(0, 10, 0, "exp", 0.1)


def test_gate_schedule_warmup_then_ramp():
    scales = [gate_scale(s, 3, 4) for s in range(9)]
    assert scales == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    assert [gate_closed(s, 3, 4) for s in range(5)] == [True, True, True, False, False]
    assert gate_scale(0, 0, 0) == 1.0 and gate_scale(5, 5, 0) == 1.0


def test_adam_atan2_matches_the_update_rule():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(5))
    ref = p.detach().clone()
    opt = AdamATan2([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.01)
    m = torch.zeros(5)
    v = torch.zeros(5)
    for t in range(1, 4):
        grad = torch.randn(5)
        p.grad = grad.clone()
        opt.step()
        ref = ref * (1 - 0.1 * 0.01)
        m = 0.9 * m + 0.1 * grad
        v = 0.99 * v + 0.01 * grad * grad
        ref = ref - 0.1 * torch.atan2(m / (1 - 0.9 ** t), (v / (1 - 0.99 ** t)).sqrt())
        torch.testing.assert_close(p.detach(), ref)
    # bounded: |update| <= lr * pi/2 whatever the gradient scale, and zero gradients are safe
    q = torch.nn.Parameter(torch.zeros(3))
    opt = AdamATan2([q], lr=1.0)
    q.grad = torch.tensor([1e30, 0.0, -1e-30])
    opt.step()
    assert torch.isfinite(q).all() and q.abs().max() <= math.pi / 2 + 1e-6


@pytest.mark.parametrize("name", ["adamw", "adamw_8bit", "adam_atan2"])
def test_optimizers_train_and_split_decay(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 1))
    opt = build_optimizer(model.parameters(), OptimConfig(optimizer=name, learning_rate=1e-2, weight_decay=0.1))
    decays = {p.dim(): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {2: 0.1, 1: 0.0}
    x = torch.randn(256, 64)
    y = x.sum(-1, keepdim=True)
    losses = []
    for _ in range(30):
        loss = (model(x) - y).pow(2).mean()
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < 0.5 * losses[0]
