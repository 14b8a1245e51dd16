from __future__ import annotations

import pytest

from hrm_ray.config import Config, build_config, load_yaml, save_yaml
from hrm_ray.errors import UserError

from .conftest import REPO_ROOT


def test_seed_flags_and_dotted_overrides_set_fields():
    cfg = build_config(None, [
        "--batch_size", "8", "--learning_rate=1e-3", "--hrm_gate_warmup_steps", "50",
        "--deep_supervision", "model.hrm.ds_weight=0.2", "--use_halting", "false",
        "--model.bridge.mode", "prefix",
    ])
    assert cfg.train.batch_size == 8
    assert cfg.optim.learning_rate == pytest.approx(1e-3)
    assert cfg.train.hrm_gate_warmup_steps == 50
    assert cfg.model.hrm.deep_supervision is True
    assert cfg.model.hrm.ds_weight == pytest.approx(0.2)
    assert cfg.model.hrm.use_halting is False
    assert cfg.model.bridge.mode == "prefix"


@pytest.mark.parametrize("args, message", [
    (["--batch_sze", "3"], "did you mean 'batch_size'"),
    (["model.hrm.ds_wieght=1"], "did you mean 'model.hrm.ds_weight'"),
    (["--optimizer", "adamx"], "optim.optimizer: 'adamx' is not one of"),
    (["--steps", "-1"], "train.steps: must be >= 0"),
    (["--mixed_precision", "fp8"], "train.mixed_precision"),
    (["--batch_size", "eight"], "--batch_size: expected an integer"),
    (["--d_model", "250", "--n_heads", "4"], "not divisible"),
])
def test_bad_values_are_rejected_with_the_name(args, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("'", "'")):
        build_config(None, args)


def test_yaml_base_and_unknown_key(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  steps: 10\noptim:\n  learning_rate: 0.01\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: base.yaml\ntrain:\n  batch_size: 4\n")
    cfg = load_yaml(child)
    assert (cfg.train.steps, cfg.train.batch_size, cfg.optim.learning_rate) == (10, 4, 0.01)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 10\n")
    with pytest.raises(UserError, match=r"bad.yaml: unknown key 'train.stepz' \(did you mean 'train.steps'"):
        load_yaml(bad)


def test_yaml_round_trip(tmp_path):
    cfg = build_config(None, ["--d_model", "64", "--encoder_backend", "mamba2"])
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(tmp_path / "c.yaml") == cfg


def test_every_shipped_yaml_is_valid():
    for path in sorted((REPO_ROOT / "experiments" / "configs").glob("**/*.yaml")):
        load_yaml(path)
    assert load_yaml(REPO_ROOT / "experiments/configs/default.yaml") == Config()


def test_profiles_overlay_after_the_file_and_unknown_profile_errors(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  steps: 100\nprofiles:\n  demo:\n    train:\n      steps: 5\n")
    stage = tmp_path / "stage.yaml"
    stage.write_text("base: base.yaml\noptim:\n  learning_rate: 0.01\nprofiles:\n  demo:\n    model:\n      d_model: 32\n")
    demo = load_yaml(stage, profile="demo")
    assert (demo.train.steps, demo.model.d_model, demo.optim.learning_rate) == (5, 32, 0.01)
    assert load_yaml(stage).train.steps == 100
    with pytest.raises(UserError, match="'dmeo' is not defined.*did you mean 'demo'"):
        build_config(str(stage), [], profile="dmeo")


def test_cli_unknown_flag_names_it_and_suggests(capsys):
    from hrm_ray.cli import main

    assert main(["train", "--batch_sze", "3"]) == 2
    assert "unknown flag '--batch_sze' (did you mean '--batch_size'?)" in capsys.readouterr().err
