"""Stablemax/softmax cross-entropy and the ACT loss head's loss and metrics."""
from __future__ import annotations

import pytest
import torch

from hrm_ray.models.hrm_act_v1 import HRMACTv1
from hrm_ray.models.puzzle import (
    ACTLossHead,
    log_stablemax,
    reduce_metrics,
    softmax_cross_entropy,
    stablemax_cross_entropy,
)
from hrm_ray.models.registry import default_config

pytestmark = pytest.mark.timeout(60)


def test_stablemax_is_a_distribution_and_monotone():
    x = torch.randn(4, 7, 11, dtype=torch.float64) * 5
    p = log_stablemax(x).exp()
    assert torch.allclose(p.sum(-1), torch.ones(4, 7, dtype=torch.float64))
    assert torch.all(p > 0)
    xs = torch.linspace(-20, 20, 101, dtype=torch.float64)
    s = torch.where(xs < 0, 1 / (1 - xs), xs + 1)
    assert torch.all(s[1:] > s[:-1])
    # the known formula on a small case: s(-1)=0.5, s(0)=1, s(2)=3
    assert torch.allclose(log_stablemax(torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)).exp(),
                          torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64) / 4.5)


def test_stablemax_cross_entropy_properties():
    logits = torch.randn(2, 5, 11) * 3
    labels = torch.randint(0, 11, (2, 5))
    labels[0, 1] = -100
    loss = stablemax_cross_entropy(logits, labels)
    assert loss.shape == (2, 5) and loss.dtype == torch.float64
    assert loss[0, 1] == 0 and torch.all(loss >= 0)
    good = torch.full((1, 1, 11), -3.0)
    good[0, 0, 4] = 50.0
    bad = good.clone()
    bad[0, 0, 4], bad[0, 0, 5] = -3.0, 50.0
    target = torch.tensor([[4]])
    assert stablemax_cross_entropy(good, target) < stablemax_cross_entropy(bad, target)
    big = (torch.randn(1, 3, 11) * 1e4).requires_grad_()   # linear growth: no overflow, finite gradient
    stablemax_cross_entropy(big, torch.tensor([[1, 2, 3]])).sum().backward()
    assert torch.isfinite(big.grad).all()


def test_softmax_cross_entropy_matches_torch():
    logits, labels = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    labels[1, 0] = -100
    ref = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
    assert torch.allclose(softmax_cross_entropy(logits, labels), ref)


@pytest.mark.parametrize("loss_type", ["stablemax_cross_entropy", "softmax_cross_entropy"])
def test_loss_head_api(loss_type):
    torch.manual_seed(0)
    model = HRMACTv1(default_config("hrm_v1", vocab_size=11, seq_len=9, d_model=32, n_heads=2, mlp_ratio=2.0,
                                    h_layers=1, l_layers=1, puzzle_emb_ndim=32, num_puzzle_identifiers=3,
                                    halt_max_steps=2))
    head = ACTLossHead(model, loss_type=loss_type).train()
    b = {"inputs": torch.randint(1, 11, (4, 9)), "labels": torch.randint(1, 11, (4, 9)),
         "puzzle_identifiers": torch.zeros(4, dtype=torch.long)}
    b["labels"][3] = -100   # a padded row: never counted
    carry = head.initial_carry(b)
    totals: dict[str, torch.Tensor] = {}
    for _ in range(2):
        carry, loss, metrics, all_halted = head(carry, b)
        loss.backward()
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0) + v
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    assert isinstance(all_halted, torch.Tensor) and bool(all_halted)
    expected = {"count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss", "q_halt_loss",
                "q_continue_loss", "samples"}
    assert expected <= metrics.keys()
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 and not v.requires_grad
               for v in metrics.values())
    assert metrics["count"] == 3 and metrics["steps"] == 6   # halted at step 2, padded row excluded
    means = reduce_metrics(totals)
    assert means["steps"] == 2.0 and 0 <= means["accuracy"] <= 1
    assert means["lm_loss"] == pytest.approx(float(totals["lm_loss"] / 8))
    with pytest.raises(ValueError, match="unknown loss_type"):
        ACTLossHead(model, loss_type="hinge")
