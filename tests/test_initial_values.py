"""Initial-value knobs (the gate's bias, the halting head's bias) listed in `train.init_values` win over the
weights `--init_from` loads: a Stage B trial sampled at gate_init_bias -3.46 starts at sigmoid(-3.46)."""
from __future__ import annotations

import math

import pytest
import torch

from hrm_ray.config import Config, build_config, to_dict
from hrm_ray.errors import UserError
from hrm_ray.models.puzzle import ACTLossHead
from hrm_ray.models.registry import build_model
from hrm_ray.train.loop import initialise
from hrm_ray.tune.sweep import trial_config, with_step_budget

pytestmark = pytest.mark.timeout(60)
STAGE_A_BIAS, TRIAL_BIAS = -2.2, -3.46
LM = ["model.vocab_size=40", "model.d_model=32", "model.n_heads=4", "model.encoder_layers=1",
      "model.decoder_layers=1", "model.hrm.use_halting=true", "train.steps=4"]
PUZZLE = ["model.name=hrm_v1_gated", "model.vocab_size=11", "model.seq_len=16", "model.puzzle_emb_ndim=0",
          "model.d_model=32", "model.n_heads=2", "model.h_layers=1", "model.l_layers=1", "train.steps=4"]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def stage_a_weights(tmp_path, overrides: list[str]) -> str:
    """A model of the 'previous stage' saved as `--init_from` reads it (a model.pt)."""
    torch.manual_seed(1)
    model = build_model(build_config(None, overrides).model)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    return str(tmp_path / "model.pt")


def started(cfg: Config) -> tuple[torch.nn.Module, dict[str, float]]:
    torch.manual_seed(0)
    model = build_model(cfg.model)
    return model, initialise(cfg, model, announce=False)


def lm_gate_mean(model) -> float:
    g = torch.Generator().manual_seed(0)
    batch = {"encoder_ids": torch.randint(4, 40, (4, 7), generator=g), "encoder_mask": torch.ones(4, 7, dtype=torch.bool),
             "decoder_input_ids": torch.randint(4, 40, (4, 5), generator=g),
             "labels": torch.randint(4, 40, (4, 5), generator=g)}
    with torch.no_grad():
        return float(model.eval()(batch).diagnostics["gate_raw_mean"])


def test_lm_gate_and_halting_biases_win_over_init_from(tmp_path):
    weights = stage_a_weights(tmp_path, [*LM, f"model.bridge.gate_init_bias={STAGE_A_BIAS}"])
    trial = [*LM, f"model.bridge.gate_init_bias={TRIAL_BIAS}", "model.hrm.halt_init_bias=-1.5",
             f"train.init_from={weights}"]
    plain, initial = started(build_config(None, trial))  # no init_values: the loaded weights as they are
    assert initial == {} and lm_gate_mean(plain) == pytest.approx(sigmoid(STAGE_A_BIAS), abs=1e-3)
    cfg = build_config(None, [*trial, "train.init_values=model.bridge.gate_init_bias,model.hrm.halt_init_bias"])
    model, initial = started(cfg)
    assert initial == {"gate_init_bias": TRIAL_BIAS, "halt_init_bias": -1.5}
    assert lm_gate_mean(model) == pytest.approx(sigmoid(TRIAL_BIAS), abs=1e-3)
    assert float(model.hrm.halt_head.bias.detach()) == -1.5
    torch.testing.assert_close(model.encoder.state_dict(), plain.encoder.state_dict())  # the rest is init_from's


def test_puzzle_gates_start_at_the_configured_bias_over_init_from(tmp_path):
    weights = stage_a_weights(tmp_path, [*PUZZLE, f"model.gate_init_bias={STAGE_A_BIAS}"])
    cfg = build_config(None, [*PUZZLE, f"model.gate_init_bias={TRIAL_BIAS}", f"train.init_from={weights}",
                              "train.init_values=model.gate_init_bias"])
    model, initial = started(cfg)
    assert initial == {"gate_init_bias": TRIAL_BIAS}
    head = ACTLossHead(model)  # the loop's model: the hook reaches the HRM through the loss head
    assert head.apply_initial_values(["gate_init_bias"]) == {"gate_init_bias": TRIAL_BIAS}
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(2, 16, 32, generator=g) for _ in range(3)]
    for gate in (model.inner.L_gate, model.inner.H_gate):
        assert float(gate(*z).mean().detach()) == pytest.approx(sigmoid(TRIAL_BIAS), abs=1e-3)


def test_init_values_name_initial_value_fields_only():
    with pytest.raises(UserError, match=r"train.init_values: 'model.bridge.gate_hidden_ratio' is not an initial"):
        build_config(None, [*LM, "train.init_values=model.bridge.gate_hidden_ratio"])


def test_a_trial_of_an_initial_value_knob_applies_it_over_init_from():
    base = {k: v for k, v in to_dict(with_step_budget(build_config(None, LM))).items() if k != "tune"}
    cfg = trial_config(base, {"model.bridge.gate_init_bias": TRIAL_BIAS, "model.hrm.halting_weight": 0.01})
    assert cfg.train.init_values == "model.bridge.gate_init_bias"
    assert trial_config(base, {"model.hrm.halting_weight": 0.01}).train.init_values == ""
