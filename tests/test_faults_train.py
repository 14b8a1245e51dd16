"""Training failures a user can cause or meet: one `error: ...` line (before Ray starts when the driver can
tell, else from inside a Ray Train worker), no retry of what a retry cannot cure, checkpoint_limit across
resumes, and presets that never override an explicit value. (A run beside another Ray instance on the same
machine: tests/test_job_submit.py.)"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import ray.cloudpickle

import tests.test_train_loop as toys
from hrm_ray.cli import main
from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata
from hrm_ray.errors import UserError
from hrm_ray.models.hrm_act_v1.config import HRMACTv1Config
from hrm_ray.train import ray_trainer
from hrm_ray.train.loop import NonFiniteLossError
from hrm_ray.train.puzzle_task import resolve_model
from tests.test_train_ray import make_prepared

REPO = Path(__file__).resolve().parents[1]
TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
        "--max_seq_len", "32", "--batch_size", "8", "--eval_batch_size", "16", "--warmup_steps", "1",
        "--synthetic_train_size", "64", "--synthetic_val_size", "16", "--log_steps", "1"]


def error_lines(capsys) -> list[str]:
    """The `error:` lines of stderr, and no traceback of the error (in-process, Ray's own log lines land on
    stderr too, and its log handlers may report a stream that an earlier test's capture closed)."""
    err = capsys.readouterr().err
    assert not re.search(r"^(hrm_ray\.[\w.]+|\w*UserError): ", err, re.MULTILINE), err[-2000:]
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_missing_init_from_fails_before_ray_and_writes_nothing(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(ray_trainer, "start_ray", lambda *a, **k: started.append(a))
    missing = tmp_path / "DOES_NOT_EXIST"
    argv = ["train", "--init_from", str(missing), "--save_dir", str(tmp_path / "runs"), "--run_name", "r",
            "--num_workers", "1", "--steps", "2", *TINY]
    assert main(argv) == 2
    assert error_lines(capsys) == [f"error: --init_from: no best-model/, checkpoint or model weights found at {missing}"]
    assert not started and not (tmp_path / "runs").exists()


def test_dataset_vocabulary_other_than_the_models_fails_before_ray(tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(ray_trainer, "start_ray", lambda *a, **k: started.append(a))
    data = make_prepared(tmp_path, "arith", 16, 8)
    argv = ["train", "--dataset", str(data), "--model.vocab_size", "7", "--save_dir", str(tmp_path / "runs"),
            "--num_workers", "1", "--steps", "2", *TINY]
    assert main(argv) == 2
    [line] = error_lines(capsys)
    assert line.startswith(f"error: {data / 'meta.json'}: vocab_size ") and "model's vocab_size 7" in line
    assert not started and not (tmp_path / "runs").exists()


@pytest.mark.timeout(120)
def test_token_ids_outside_the_vocabulary_name_dataset_and_field(ray_session, tmp_path, capsys):
    data = make_prepared(tmp_path, "arith", 32, 8)  # character ids up to 88 in the prompts, 29 in the answers
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "vocab_size": 40}))
    argv = ["train", "--dataset", str(data), "--save_dir", str(tmp_path / "runs"), "--run_name", "ids",
            "--num_workers", "0", "--steps", "2", *TINY]
    assert main(argv) == 2
    [line] = error_lines(capsys)
    assert line.startswith(f"error: {data}: field 'encoder_ids' holds token id ")
    assert "outside the model's vocabulary [0, 40)" in line


class CountingNaNTask(toys.ToyTask):
    """Every loss NaN; each start of the loop (a retry would start it again) appends a line to `starts`."""

    def __init__(self, cfg, starts: str):
        super().__init__(cfg, nan_from=0)
        self.starts = starts

    def train_feed(self, ctx):
        with open(self.starts, "a") as out:
            out.write("start\n")
        return super().train_feed(ctx)


@pytest.mark.timeout(180)
def test_a_user_error_in_a_ray_worker_is_one_user_error_and_never_retried(ray_session, tmp_path):
    ray.cloudpickle.register_pickle_by_value(toys)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = toys.toy_cfg(tmp_path / "runs", "--steps", "6", "--num_workers", "1", "--cpus_per_worker", "1",
                       "--max_failures", "2", "--max_nonfinite_steps", "2", "--run_name", "nan")
    starts = tmp_path / "starts.txt"
    with pytest.raises(UserError, match=r"^2 non-finite steps in a row at step 2 \(max_nonfinite_steps=2\)"):
        ray_trainer.train(cfg, CountingNaNTask(cfg, str(starts)))
    assert starts.read_text().splitlines() == ["start"]  # max_failures 2, yet the loop ran once
    assert issubclass(NonFiniteLossError, UserError)


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("checkpoint_*") if p.is_dir())


@pytest.mark.timeout(240)
def test_checkpoint_limit_holds_across_resumes_with_and_without_workers(ray_session, tmp_path):
    ray.cloudpickle.register_pickle_by_value(toys)
    run_dir = tmp_path / "limit"

    def resume(steps: int, workers: int) -> list[str]:
        cfg = toys.toy_cfg(tmp_path, "--steps", str(steps), "--num_workers", str(workers), "--cpus_per_worker", "1",
                           "--val_every", "1", "--checkpoint_limit", "2", "--run_name", "limit")
        assert ray_trainer.train(cfg, toys.ToyTask(cfg)).step == steps
        return checkpoints(run_dir)

    assert resume(3, 1) == ["checkpoint_00000002", "checkpoint_00000003"]
    # in-process: Ray's checkpoints stay (Ray prunes them, and its next run fails on one deleted under it)
    assert resume(5, 0) == [f"checkpoint_0000000{i}" for i in (2, 3, 4, 5)]
    # with a worker again: Ray prunes its own, rank 0 the in-process ones
    assert resume(7, 1) == ["checkpoint_00000006", "checkpoint_00000007"]


@pytest.mark.parametrize("order", [["arch=hrm_v1_gated", "arch.use_gating=false"],
                                   ["arch.use_gating=false", "arch=hrm_v1_gated"]])
def test_a_preset_never_overrides_an_explicit_value(tmp_path, order):
    meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
                                 num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1.0, sets=["all"])
    cfg = build_config(None, order, aliases=PAPER_FLAGS)
    assert cfg.model.use_gating is False and resolve_model(cfg.model, meta).use_gating is False
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("model: {name: hrm_v1_gated, use_gating: false}\n")
    assert resolve_model(build_config(str(yaml_file), []).model, meta).use_gating is False
    gated = build_config(None, ["arch=hrm_v1_gated"], aliases=PAPER_FLAGS)
    assert gated.model.use_gating is True and resolve_model(gated.model, meta).use_gating is True
    assert HRMACTv1Config().use_gating is False  # the explicit value equals the default: the case at stake


def exit_code(argv: list[str]) -> int:
    """`hrm-ray ARGV` in-process: its return value, or the code argparse exits with."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_user_errors_of_every_command_are_one_line(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: {steps: [1,\n")
    cases = [
        (["train", "--config", str(bad_yaml)], str(bad_yaml)),
        (["train", "--steps", "many"], "train.steps"),
        (["tune", "--init_from", str(tmp_path / "nope"), "--steps", "4", "--sweep_dir", str(tmp_path)], "nope"),
        (["tune", "--steps", "0", "--sweep_dir", str(tmp_path)], "--steps"),
        (["eval", "--run_name", "nope", "--save_dir", str(tmp_path)], "nope"),
        (["eval"], "--run_name"),
        (["generate", "--checkpoint", str(tmp_path / "nope"), "--prompt", "1+1"], "nope"),
        (["generate", "--run_name", "nope", "--save_dir", str(tmp_path), "--prompt", "1+1", "--max_new_tokens", "x"],
         "--max_new_tokens"),
    ]
    for argv, named in cases:
        code, lines = exit_code(argv), error_lines(capsys)
        assert code == 2 and len(lines) == 1 and named in lines[0], (argv, lines)
    assert not list(tmp_path.rglob("config.yaml"))
