"""`hrm-ray train` / `hrm-ray eval` end to end in-process (num_workers 0), and every seed flag."""
from __future__ import annotations

import json

import pytest

from hrm_ray.cli import build_parser, main
from hrm_ray.config import build_config, get_value

SEED_FLAGS = {
    "dataset": ("data.dataset", "synthetic"), "batch_size": ("train.batch_size", "7"),
    "eval_batch_size": ("train.eval_batch_size", "9"), "optimizer": ("optim.optimizer", "adam_atan2"),
    "learning_rate": ("optim.learning_rate", "0.002"), "lr_scheduler": ("optim.lr_scheduler", "linear"),
    "lr_min_ratio": ("optim.lr_min_ratio", "0.05"), "warmup_steps": ("optim.warmup_steps", "11"),
    "steps": ("train.steps", "13"), "epochs": ("train.epochs", "3"), "val_every": ("train.val_every", "17"),
    "save_dir": ("ray.storage_path", "somewhere"), "run_name": ("train.run_name", "r"),
    "checkpoint_limit": ("train.checkpoint_limit", "4"), "save_best_model": ("train.save_best_model", "false"),
    "max_seq_len": ("data.max_seq_len", "64"), "log_steps": ("train.log_steps", "5"),
    "dataset_workers": ("data.dataset_workers", "2"), "mixed_precision": ("train.mixed_precision", "bf16"),
    "grad_clip": ("optim.grad_clip", "0.5"), "max_val_samples": ("data.max_val_samples", "100"),
    "eval_loss_patience": ("train.eval_loss_patience", "3"),
    "patience_grace_steps": ("train.patience_grace_steps", "50"),
    "hrm_gate_warmup_steps": ("train.hrm_gate_warmup_steps", "21"), "deep_supervision": ("model.hrm.deep_supervision", "true"),
    "ds_weight": ("model.hrm.ds_weight", "0.2"), "use_halting": ("model.hrm.use_halting", "true"),
    "halting_weight": ("model.hrm.halting_weight", "0.01"), "grad_accum_steps": ("train.grad_accum_steps", "2"),
    "gate_ramp_steps": ("train.gate_ramp_steps", "8"), "init_from": ("train.init_from", "runs/a"),
    "num_workers": ("ray.num_workers", "2"), "use_gpu": ("ray.use_gpu", "true"),
    "max_failures": ("ray.max_failures", "2"),
    "seed": ("train.seed", "5"), "wandb": ("train.wandb", "off"), "address": ("ray.address", "ray://h:10001"),
}


def test_every_seed_flag_maps_to_a_config_field():
    parser = build_parser()
    argv = ["train"]
    for flag, (_, value) in SEED_FLAGS.items():
        argv += [f"--{flag}", value]
    args, config_flags = parser.parse_known_args([*argv, "model.hrm.h_cycles=3", "--dry_run"])
    cfg = build_config(None, config_flags)
    assert args.dry_run and cfg.model.hrm.h_cycles == 3
    for flag, (path, value) in SEED_FLAGS.items():
        got = get_value(cfg, path)
        expected = {"true": True, "false": False}.get(value, type(got)(value) if not isinstance(got, bool) else value)
        assert got == expected, flag


def test_bad_values_exit_2_naming_the_field(capsys):
    assert main(["train", "--optimizer", "adamx"]) == 2
    assert "optim.optimizer" in capsys.readouterr().err
    assert main(["train", "--stepz", "3"]) == 2
    assert "unknown flag '--stepz' (did you mean '--steps'?)" in capsys.readouterr().err


@pytest.mark.timeout(240)
def test_train_resume_and_eval_commands(tmp_path, capsys):
    argv = ["train", "--num_workers", "0", "--d_model", "32", "--n_heads", "2", "--encoder_layers", "1",
            "--decoder_layers", "1", "--synthetic_train_size", "256", "--synthetic_val_size", "32",
            "--batch_size", "16", "--steps", "4", "--val_every", "2", "--log_steps", "2", "--wandb", "off",
            "--save_dir", str(tmp_path), "--run_name", "cli", "--checkpoint_limit", "1"]
    assert main(argv) == 0
    run_dir = tmp_path / "cli"
    assert sorted(p.name for p in run_dir.iterdir()) == ["best-model", "checkpoint_00000004", "config.yaml",
                                                         "metrics.jsonl", "workers.json"]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in lines] == [(1, "flops"), (2, "train"), (2, "val"), (4, "train"),
                                                         (4, "val")]
    assert "finished at step 4/4" in capsys.readouterr().out
    assert main(argv) == 0
    assert "already at step 4 >= steps 4" in capsys.readouterr().out
    assert main(["eval", "--run_name", "cli", "--save_dir", str(tmp_path), "--max_samples", "20"]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "exact match" in out and "on 20 held-out problems" in out
