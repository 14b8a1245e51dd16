"""The puzzle HRM (ACT v1): shapes, gradient scope, halting, carry handling, gating."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from hrm_ray.models.hrm_act_v1 import HRMACTv1
from hrm_ray.models.puzzle import ACTLossHead, reduce_metrics
from hrm_ray.models.registry import default_config

pytestmark = pytest.mark.timeout(60)

B, L, V = 3, 16, 11


def tiny(name: str = "hrm_v1", **kw) -> HRMACTv1:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, seq_len=L, num_puzzle_identifiers=5, puzzle_emb_ndim=40, d_model=32,
               n_heads=2, mlp_ratio=2.0, h_layers=1, l_layers=1, halt_max_steps=4)
    cfg.update(kw)
    return HRMACTv1(default_config(name, **cfg))


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, V, (B, L), generator=g), "labels": torch.randint(1, V, (B, L), generator=g),
            "puzzle_identifiers": torch.randint(0, 5, (B,), generator=g)}


def test_shapes_and_puzzle_prefix():
    model = tiny()
    assert model.config.puzzle_emb_len == 2  # ceil(40 / 32)
    b = batch()
    carry, out = model(model.initial_carry(b), b)
    assert out["logits"].shape == (B, L, V)
    assert out["q_halt_logits"].shape == out["q_continue_logits"].shape == (B,)
    assert carry.inner.z_H.shape == carry.inner.z_L.shape == (B, L + 2, 32)
    assert not carry.inner.z_H.requires_grad and not carry.inner.z_L.requires_grad
    assert torch.equal(carry.current_data["inputs"], b["inputs"])


def test_paper_preset_size():
    with torch.device("meta"):
        model = HRMACTv1(default_config("hrm_v1", vocab_size=11, seq_len=81))
    n = sum(p.numel() for p in model.parameters())
    assert 26e6 < n < 28e6  # the paper's 27M


@pytest.mark.parametrize("one_step, l_grad_calls", [(True, 1), (False, 2)])
def test_gradient_scope(one_step, l_grad_calls):
    model = tiny(one_step_grad=one_step, h_cycles=2, l_cycles=2)
    model.train()
    calls = {"L": [], "H": []}
    model.inner.L_level.register_forward_hook(lambda m, i, o: calls["L"].append(torch.is_grad_enabled()))
    model.inner.H_level.register_forward_hook(lambda m, i, o: calls["H"].append(torch.is_grad_enabled()))
    b = batch()
    carry, out = model(model.initial_carry(b), b)
    # one segment = 4 L + 2 H updates, plus the same again without grad for the bootstrapped Q target
    assert len(calls["L"]) == 8 and len(calls["H"]) == 4
    assert sum(calls["L"]) == l_grad_calls and sum(calls["H"]) == 1
    assert calls["H"][1] and calls["L"][3]  # the grad-carrying updates are the segment's last ones
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in model.inner.L_level.parameters())


def test_eval_runs_all_steps_and_halts_together():
    model = tiny(halt_max_steps=4).eval()
    with torch.no_grad():  # force "halt now" Q values: ignored in evaluation
        model.inner.q_head.bias.copy_(torch.tensor([10.0, -10.0]))
    b = batch()
    carry = model.initial_carry(b)
    for step in range(1, 5):
        carry, out = model(carry, b)
        assert torch.all(carry.steps == step)
        assert bool(carry.halted.all()) == (step == 4)
    assert "target_q_continue" not in out


def test_training_halting_rules():
    model = tiny(halt_max_steps=4, halt_exploration_prob=0.0).train()
    b = batch()
    carry = model.initial_carry(b)
    # Initial Q head says continue (equal logits): run to halt_max_steps.
    for step in range(1, 5):
        carry, out = model(carry, b)
        assert bool(carry.halted.all()) == (step == 4)
    assert out["target_q_continue"].shape == (B,)
    # Q says halt: halts after one segment when exploration is off...
    with torch.no_grad():
        model.inner.q_head.bias.copy_(torch.tensor([10.0, -10.0]))
    carry, _ = model(model.initial_carry(b), b)
    assert carry.halted.all()
    # ...and exploration can impose a minimum of 2..halt_max_steps segments.
    model.config.halt_exploration_prob = 1.0
    torch.manual_seed(1)
    carry, _ = model(model.initial_carry(b), b)
    assert not carry.halted.any()


def test_halted_slots_reset_and_refill():
    model = tiny(halt_max_steps=2).eval()
    first, second = batch(0), batch(1)
    carry, _ = model(model.initial_carry(first), first)
    carry.halted = torch.tensor([True, False, True])
    carry.steps = torch.tensor([1, 1, 1], dtype=torch.int32)
    old_z = carry.inner.z_H.clone()
    new_carry, _ = model(carry, second)
    assert torch.equal(new_carry.steps, torch.tensor([1, 2, 1], dtype=torch.int32))
    for i, fresh in enumerate([True, False, True]):
        src = second if fresh else first
        assert torch.equal(new_carry.current_data["inputs"][i], src["inputs"][i])
    reset = model.inner.reset_carry(carry.halted, carry.inner)
    assert torch.equal(reset.z_H[0], model.inner.H_init.expand_as(reset.z_H[0]))
    assert torch.equal(reset.z_L[2], model.inner.L_init.expand_as(reset.z_L[2]))
    assert torch.equal(reset.z_H[1], old_z[1])


def test_gated_preset_differs_only_in_use_gating():
    a, b = dataclasses.asdict(default_config("hrm_v1")), dataclasses.asdict(default_config("hrm_v1_gated"))
    assert {k for k in a if a[k] != b[k]} == {"name", "use_gating"}
    with pytest.raises(ValueError, match="did you mean 'hrm_v1_gated'"):
        default_config("hrm_v1_gate")
    with pytest.raises(ValueError, match="did you mean 'h_cycles'"):
        default_config("hrm_v1", h_cycle=3)


def test_gates_start_at_init_bias_and_closed_gate_keeps_identity_path():
    model = tiny("hrm_v1_gated", gate_init_bias=-2.2).eval()
    inner = model.inner
    z_L, z_H, x = (torch.randn(B, L + 2, 32) for _ in range(3))
    g = inner.L_gate(z_L, z_H, x)
    assert torch.allclose(g, torch.full_like(g, torch.sigmoid(torch.tensor(-2.2)).item()))
    with torch.no_grad():
        inner.L_gate.down.bias.fill_(-60.0)
        inner.H_gate.down.bias.fill_(-60.0)
    rope = inner.rope(x.device)
    closed_L = inner._step_L(z_L, z_H, x, rope, None)
    assert torch.allclose(closed_L, inner.L_level(z_L, torch.zeros_like(z_L), rope=rope), atol=1e-6)
    closed_H = inner._step_H(z_H, z_L, x, rope, None)
    assert torch.allclose(closed_H, inner.H_level(z_H, torch.zeros_like(z_H), rope=rope), atol=1e-6)


def test_gate_metrics_through_loss_head():
    head = ACTLossHead(tiny("hrm_v1_gated"))
    head.train()
    b = batch()
    carry, loss, metrics, all_halted = head(head.initial_carry(b), b)
    loss.backward()
    for mod in ("L", "H"):
        for stat in ("mean", "sat_low", "sat_high", "contribution"):
            assert f"gate_{mod}_{stat}" in metrics
    means = reduce_metrics(metrics)
    assert means["gate_L_mean"] == pytest.approx(0.0998, abs=1e-3)
    assert means["gate_L_sat_low"] == pytest.approx(1.0)
    assert head.model.inner.L_gate.down.weight.grad is not None


def test_learned_positions_and_no_puzzle_embedding():
    model = tiny(pos_encodings="learned", puzzle_emb_ndim=0)
    b = batch()
    carry, out = model(model.initial_carry(b), b)
    assert out["logits"].shape == (B, L, V) and carry.inner.z_H.shape[1] == L
    assert model.parameter_groups()["sparse_embedding"] == []
    with pytest.raises(ValueError, match="pos_encodings"):
        tiny(pos_encodings="alibi")
