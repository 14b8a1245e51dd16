"""One parse per flag: argparse reads a command's own options, the config's parser reads every config flag
once, as typed; `--help` lists the tree by section; no short flag is context-free."""
from __future__ import annotations

import argparse

import pytest

from hrm_ray.cli import build_parser, main
from hrm_ray.commands.config_flags import parse_command_line
from hrm_ray.config import CONTEXT_FREE_NAMES, Config, build_config, flag_index, leaf_paths
from hrm_ray.errors import UserError
from hrm_ray.models import registry


def train_args(*argv: str) -> tuple[argparse.Namespace, list[str]]:
    return build_parser().parse_known_args(["train", *argv])


def test_argparse_declares_only_the_commands_own_options():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    config_flags = set()
    for family in registry.FAMILIES:
        cfg = Config(model=registry.default_config(family))
        config_flags |= {f"--{name}" for name in [*flag_index(cfg), *leaf_paths(cfg)]}
    for command in ("train", "tune"):
        options = {o for action in subparsers.choices[command]._actions for o in action.option_strings}
        assert {"--help", "--config"} <= options and len(options) < 10 and not options & config_flags, command


def test_config_flags_reach_the_config_parser_in_order_and_as_typed():
    argv = ["--run_name", "007", "--lr", "1e-4", "--wandb_project", "1.50", "--init_from", "", "--select_on",
            "-x", "model.d_model=48", "--gate_init_bias=-3", "--use_gpu", "data.max_seq_len=64", "--seed", "-0"]
    args, rest = train_args("--config", "c.yaml", *argv)
    assert rest == argv and args.config == "c.yaml"  # argparse took nothing of them, reordered nothing
    cfg = build_config(None, rest)
    assert (cfg.train.run_name, cfg.optim.learning_rate, cfg.train.wandb_project) == ("007", 1e-4, "1.50")
    assert (cfg.train.init_from, cfg.train.select_on, cfg.model.d_model) == ("", "-x", 48)
    assert (cfg.model.bridge.gate_init_bias, cfg.ray.use_gpu, cfg.data.max_seq_len, cfg.train.seed) == \
        (-3.0, True, 64, 0)
    # Each token is read once: a value that looks like a model name is the value, not a second setting.
    cfg = build_config(None, ["--run_name", "arch=hrm_v1", "--use_gpu", "data_path=x", "--compile", "0"])
    assert (cfg.model.name, cfg.train.run_name, cfg.ray.use_gpu, cfg.data.dataset, cfg.train.compile) == \
        ("hrm_lm", "arch=hrm_v1", True, "x", False)
    with pytest.raises(UserError, match="flag '--steps' needs a value"):
        build_config(None, ["--steps"])


def test_dry_run_takes_only_a_boolean_and_leaves_an_override_in_its_place():
    args, rest = train_args("--d_model", "64", "--dry_run", "model.d_model=32")
    assert args.dry_run == "1" and rest == ["--d_model", "64", "model.d_model=32"]
    assert build_config(None, rest).model.d_model == 32  # the later one wins, as written
    assert train_args("--dry_run", "0", "--steps", "3")[0].dry_run == "0"
    assert train_args("--dry_run", "TRUE")[0].dry_run == "true"
    assert train_args("--steps", "3")[0].dry_run == "0"


def test_an_unknown_flag_is_one_line_naming_it_and_the_closest(capsys):
    for argv, closest in ((["--batch_sze", "3"], "--batch_size"), (["--confg", "x.yaml"], "--config"),
                          (["--dry_rn"], "--dry_run"), (["steps_=3"], "steps")):
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"unknown flag '{argv[0].split('=')[0]}' (did you mean '{closest}'?)" in err
    tune = argparse.ArgumentParser()
    from hrm_ray.commands.tune import configure

    configure(tune)
    args = parse_command_line(tune, ["--name", "s1", "--num_samples", "3"])
    assert (args.name, args.passed_arguments) == ("s1", ["--num_samples", "3"])  # --name is the sweep's


def test_no_short_flag_is_context_free():
    leaves = set()
    for family in registry.FAMILIES:
        cfg = Config(model=registry.default_config(family))
        assert not set(flag_index(cfg)) & CONTEXT_FREE_NAMES, family
        leaves |= {path.rsplit(".", 1)[-1] for path in leaf_paths(cfg)}
    assert CONTEXT_FREE_NAMES <= leaves  # each name on the list is a field somewhere: the list is not stale
    for flag, path in (("mode", "model.bridge.mode"), ("enabled", "model.hrm.enabled"), ("name", "model.name")):
        with pytest.raises(UserError, match=f"'--{flag}' says nothing alone: write --{path}"):
            build_config(None, [f"--{flag}", "x"])
    cfg = build_config(None, ["--model.bridge.mode", "prefix", "model.hrm.enabled=false", "--eval.limit", "5"])
    assert (cfg.model.bridge.mode, cfg.model.hrm.enabled, cfg.eval.limit) == ("prefix", False, 5)


def test_help_lists_every_section_and_each_flag_once(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--dry_run" in out
    titles = [line.split(":")[0] for line in out.splitlines() if line[:1].isalpha() and ":" in line]
    assert [t for t in titles if t in ("model", "data", "optim", "train", "eval", "ray", "tune")] == \
        ["model", "data", "optim", "train", "eval", "ray", "tune"]
    rows = [line.split()[0] for line in out.splitlines() if line.startswith("  --") and "=" not in line.split()[0]]
    assert len(rows) == len(set(rows)) and 100 < len(rows) < 160
    row = {line.split()[0]: line for line in out.splitlines() if line.startswith("  --")}
    assert row["--batch_size"].split()[1:] == ["32"]
    assert "[hrm_lm: model.hrm.h_cycles]" in row["--h_cycles"] and "3 [trm]" in row["--h_cycles"]
    assert "--model.bridge.mode" in row and "--mode" not in row and "--name" not in row
    assert "--lr = optim.learning_rate" in out and "--H_cycles = --h_cycles" in out
