from __future__ import annotations

import pytest

from hrm_ray.config import PAPER_FLAGS, Config, build_config, load_yaml, save_yaml
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
    (["--batch_sze", "3"], "did you mean '--batch_size'"),
    (["model.hrm.ds_wieght=1"], "did you mean 'model.hrm.ds_weight'"),
    (["--optimizer", "adamx"], "optim.optimizer: 'adamx' is not one of"),
    (["--steps", "-1"], "train.steps: must be >= 0"),
    (["--mixed_precision", "fp8"], "train.mixed_precision"),
    (["--batch_size", "eight"], "--batch_size .train.batch_size.: expected an integer"),
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


@pytest.mark.parametrize("family", ["hrm_lm", "hrm_act_v1", "transformer_baseline"])
def test_no_flag_name_is_ambiguous_in_any_family(family):
    from collections import Counter

    from hrm_ray.config import leaf_paths
    from hrm_ray.models import registry

    counts = Counter(p.rsplit(".", 1)[-1] for p in leaf_paths(Config(model=registry.default_config(family))))
    assert [name for name, n in counts.items() if n > 1] == []


def test_model_name_picks_the_family_section_in_any_order(tmp_path):
    cfg = build_config(None, ["--h_cycles", "3", "--arch", "hrm_v1_gated", "--d_model", "64", "--n_heads", "4"],
                       aliases=PAPER_FLAGS)
    assert (cfg.task, cfg.model.name, cfg.model.use_gating, cfg.model.h_cycles, cfg.model.d_model) == \
        ("puzzle", "hrm_v1_gated", True, 3, 64)
    lm = build_config(None, ["--h_cycles", "3", "--l_steps", "4"])
    assert (lm.task, lm.model.hrm.h_cycles, lm.model.hrm.l_cycles) == ("lm", 3, 4)
    # A base YAML may set fields of the model its child names; the paper's spellings are YAML aliases too.
    (tmp_path / "base.yaml").write_text("model:\n  H_cycles: 4\n  puzzle_emb_ndim: 0\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nmodel:\n  name: hrm_v1\n  hidden_size: 64\n")
    child = load_yaml(tmp_path / "child.yaml")
    assert (child.model.h_cycles, child.model.puzzle_emb_ndim, child.model.d_model) == (4, 0, 64)
    with pytest.raises(UserError, match="model 'hrm_v1' has no such field"):
        build_config(None, ["--arch", "hrm_v1", "--dropout", "0.1"], aliases=PAPER_FLAGS)


def test_a_config_saved_before_the_shared_model_section_still_loads():
    from hrm_ray.config import from_dict

    old = {"task": "puzzle", "arch": {"name": "hrm_v1_gated", "H_cycles": 3, "hidden_size": 64, "num_heads": 4},
           "puzzle": {"data_path": "/d", "global_batch_size": 64, "ema": True, "puzzle_emb_lr": 0.5},
           "model": {"d_model": 512, "hrm": {"l_steps": 5}}, "train": {"epochs": 7, "save_dir": "/old/runs"}}
    cfg = from_dict(old)
    assert (cfg.model.name, cfg.model.h_cycles, cfg.model.d_model, cfg.data.dataset) == ("hrm_v1_gated", 3, 64, "/d")
    assert (cfg.train.global_batch_size, cfg.train.ema, cfg.optim.puzzle_emb_lr, cfg.train.epochs) == (64, True, 0.5, 7)
    assert cfg.ray.storage_path == "/old/runs"  # the seed's save_dir is the storage root
    lm = from_dict({"task": "lm", "model": {"d_model": 96, "hrm": {"l_steps": 5}}, "arch": {"name": "hrm_v1"}})
    assert (lm.model.name, lm.model.d_model, lm.model.hrm.l_cycles) == ("hrm_lm", 96, 5)


def test_tune_section_holds_the_search_space_and_scheduler_settings(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("tune:\n  model.bridge.gate_init_bias: {uniform: [-4.0, -1.0]}\n  num_samples: 3\n")
    cfg = build_config(str(path), ["--max_t", "50", "--reduction_factor", "2"])
    assert cfg.tune.space == {"model.bridge.gate_init_bias": {"uniform": [-4.0, -1.0]}}
    assert (cfg.tune.num_samples, cfg.tune.max_t, cfg.tune.reduction_factor) == (3, 50, 2)
    path.write_text("tune:\n  model.bridge.gate_bias: {uniform: [-4.0, -1.0]}\n")
    with pytest.raises(UserError, match="'model.bridge.gate_bias' is not a config field.*gate_init_bias"):
        load_yaml(path)


def test_command_line_flags_reach_the_family_the_model_name_picks():
    import argparse

    from hrm_ray.commands.config_flags import parse_command_line
    from hrm_ray.commands.train import configure

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parse_command_line(parser, ["--h_cycles", "1", "--arch", "hrm_v1_gated", "--hidden_size", "64",
                                       "--use_gating", "--init_from", "", "--H_layers", "3"])
    cfg = build_config(args.config, args.passed_arguments, aliases=PAPER_FLAGS)
    assert (cfg.model.h_cycles, cfg.model.d_model, cfg.model.use_gating, cfg.model.h_layers) == (1, 64, True, 3)
    assert cfg.train.init_from == ""
    lm = parse_command_line(parser, ["--h_cycles", "1", "--l_steps", "2"])
    lm_cfg = build_config(None, lm.passed_arguments, aliases=PAPER_FLAGS)
    assert (lm_cfg.model.hrm.h_cycles, lm_cfg.model.hrm.l_cycles) == (1, 2)
