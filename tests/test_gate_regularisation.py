"""Gate regularisation toward an openness band: its sign, and a few optimizer steps moving a saturated
gate (the HRM x LM bridge gate, the gated puzzle HRM's H and L gates) back into the band."""
from __future__ import annotations

import pytest
import torch

from hrm_ray.config import build_config
from hrm_ray.errors import UserError
from hrm_ray.models.hrm_act_v1 import HRMACTv1, HRMACTv1Config
from hrm_ray.models.hrm_lm import HRMLanguageModel, HRMLMConfig
from hrm_ray.models.layers import gate_band_penalty
from hrm_ray.models.puzzle import ACTLossHead
from tests.test_model_hybrid import random_batch

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("one_thread")]


def test_the_band_penalty_pulls_toward_the_band_where_min_g_1_minus_g_squared_pushes_away():
    for start, direction in ((0.97, -1), (0.02, 1)):
        g = torch.tensor(start, requires_grad=True)
        gate_band_penalty(g, [0.1, 0.9]).backward()
        assert g.grad * -direction > 0  # gradient descent moves g toward the band
        fork = torch.tensor(start, requires_grad=True)
        torch.minimum(fork, 1 - fork).pow(2).backward()
        assert fork.grad * -direction < 0  # the fork's form moves it further toward 0 or 1
    inside = torch.tensor(0.5, requires_grad=True)
    gate_band_penalty(inside, [0.1, 0.9]).backward()
    assert inside.grad == 0


def bridge_gate(model: HRMLanguageModel, batch: dict) -> float:
    return model(batch).diagnostics["gate_raw_mean"].item()


def test_a_saturated_bridge_gate_comes_back_into_the_band():
    torch.manual_seed(0)
    cfg = HRMLMConfig(vocab_size=40, d_model=32, n_heads=4, encoder_layers=1, decoder_layers=1, mlp_ratio=2.0)
    cfg.bridge.gate_init_bias, cfg.bridge.gate_reg_weight, cfg.bridge.gate_reg_band = 6.0, 1.0, [0.2, 0.8]
    model = HRMLanguageModel(cfg)
    batch = random_batch()
    assert bridge_gate(model, batch) > 0.99
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(12):
        optimizer.zero_grad()
        out = model(batch)
        out.loss.backward()
        optimizer.step()
    assert out.losses["gate_reg"] > 0  # the term is logged with the other losses
    assert 0.15 <= bridge_gate(model, batch) <= 0.8
    cfg.bridge.gate_reg_weight = 0.0
    assert "gate_reg" not in HRMLanguageModel(cfg)(batch).losses  # off by default: no term


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_the_gated_puzzle_hrm_gates_come_back_into_the_band(weight: float):
    torch.manual_seed(0)
    cfg = HRMACTv1Config(vocab_size=12, seq_len=9, num_puzzle_identifiers=2, puzzle_emb_ndim=0, d_model=32,
                         n_heads=2, h_layers=1, l_layers=1, h_cycles=1, l_cycles=2, halt_max_steps=1,
                         use_gating=True, gate_init_bias=6.0, gate_reg_weight=weight, gate_reg_band=[0.2, 0.8])
    head = ACTLossHead(HRMACTv1(cfg), "softmax_cross_entropy")
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(1, 12, (4, 9), generator=g), "labels": torch.randint(1, 12, (4, 9), generator=g),
             "puzzle_identifiers": torch.zeros(4, dtype=torch.long)}
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    gates = []
    for _ in range(15):
        optimizer.zero_grad()
        _, loss, metrics, _ = head(head.initial_carry(batch), batch)
        loss.backward()
        optimizer.step()
        gates.append((metrics["gate_H_mean"] / 4, metrics["gate_L_mean"] / 4))
    assert min(gates[0]) > 0.99 and ("gate_reg_loss" in metrics) == (weight > 0)
    assert (max(gates[-1]) <= 0.8) == (weight > 0)  # without the term the gates stay saturated


def test_the_config_checks_the_band_and_takes_the_flags():
    cfg = build_config(None, ["--gate_reg_weight", "0.5", "--gate_reg_band", "0.2,0.7"])
    assert cfg.model.bridge.gate_reg_weight == 0.5 and cfg.model.bridge.gate_reg_band == [0.2, 0.7]
    cfg = build_config(None, ["arch=hrm_v1_gated", "gate_reg_weight=0.1"])
    assert cfg.model.gate_reg_weight == 0.1 and cfg.model.gate_reg_band == [0.1, 0.9]
    with pytest.raises(UserError, match="gate_reg_band: expected LOW,HIGH"):
        build_config(None, ["--gate_reg_band", "0.9,0.2"])
