"""The puzzle HRM on the model-agnostic trainer: in-process training, resume, schedule errors, paper flags,
presets, the eval subset's interval, and one 2-worker TorchTrainer run over Ray Dataset shards."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.data.puzzles.format import load_split
from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset
from hrm_ray.errors import UserError
from hrm_ray.train.checkpoint import CheckpointStore, load_checkpoint
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.puzzle_task import PuzzleTask, build_puzzle_model, resolve_model, wilson_interval
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import WorkerContext

TINY = ["model.name=hrm_v1", "model.d_model=32", "model.n_heads=2", "model.mlp_ratio=2", "model.h_layers=1",
        "model.l_layers=1", "model.h_cycles=1", "model.l_cycles=2", "model.puzzle_emb_ndim=32", "model.halt_max_steps=2",
        "optim.optimizer=adam_atan2", "lr=3e-3", "puzzle_emb_lr=1e-2", "lr_warmup_steps=2", "optim.grad_clip=0",
        "train.log_steps=2", "train.eval_batch_size=8", "train.wandb=off", "ray.num_workers=0"]


@pytest.fixture(scope="module")
def sudoku_dir(real_data: Path, tmp_path_factory) -> Path:
    """26 top95 puzzles, solved by the builder: 22 train (x2 with one augmentation each), 4 test."""
    tmp = tmp_path_factory.mktemp("sudoku")
    lines = [ln for ln in (real_data / "sudoku" / "top95.txt").read_text().splitlines() if ln.strip()][:26]
    (tmp / "puzzles.txt").write_text("\n".join(lines) + "\n")
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(tmp / "data"), puzzles=str(tmp / "puzzles.txt"),
                                           num_aug=1, test_size=4, workers=1), log=lambda _: None)
    return tmp / "data"


def tiny_config(data: Path, *extra: str):
    """The resolved config of a tiny model on `data` (steps, per-worker batch, data fields derived)."""
    return resolve_config(build_config(None, [*TINY, f"data_path={data}", *extra], aliases=PAPER_FLAGS))


def train_in_process(task: PuzzleTask, run_dir: Path):
    torch.set_num_threads(1)
    return run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, 3), RunFiles(str(run_dir)))


def records(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.mark.timeout(120)
def test_trains_in_process_with_metrics_and_full_final_eval(sudoku_dir: Path, tmp_path: Path):
    cfg = tiny_config(sudoku_dir, "arch=hrm_v1_gated", "global_batch_size=8", "epochs=6", "eval_interval=3",
                      "train.eval_subset=2")
    task = PuzzleTask(cfg)
    # 22 groups (one puzzle of each per epoch): 3 epochs = 66 examples = 8 full batches per iteration.
    assert (task.cfg.train.steps, task.cfg.train.val_every, task.cfg.train.batch_size) == (16, 8, 8)
    result = train_in_process(task, tmp_path)
    assert result.step == 16
    train = records(tmp_path, "train")
    assert train[-1]["lm_loss"] < train[0]["lm_loss"]
    assert {"accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "q_halt_loss", "q_continue_loss",
            "gate_L_mean", "gate_H_sat_low", "gate_L_contribution"} <= set().union(*map(set, train))
    val = records(tmp_path, "val")
    assert [v["examples"] for v in val] == [2, 4]        # the fixed subset, then the whole test split
    assert val[0]["exact_accuracy_ci_low"] <= val[0]["exact_accuracy"] <= val[0]["exact_accuracy_ci_high"]
    assert val[1]["exact_accuracy_ci_low"] == val[1]["exact_accuracy"] == val[1]["exact_accuracy_ci_high"]
    assert (tmp_path / "best-model" / "model.safetensors").is_file()
    # best-model/ and the checkpoints select by exact accuracy (ties broken by the lower loss)
    assert result.selection_metric == "exact_accuracy"
    assert result.best_metric == max(v["exact_accuracy"] for v in val)
    best = json.loads((tmp_path / "best-model" / "meta.json").read_text())
    assert best["selection_metric"] == "exact_accuracy" and best["selection_mode"] == "max"
    top = max(val, key=lambda v: (v["exact_accuracy"], -v["loss"]))
    assert (best["step"], best["val_exact_accuracy"]) == (top["step"], top["exact_accuracy"])
    meta = json.loads((CheckpointStore(tmp_path, 0).latest() / "meta.json").read_text())
    assert meta["selection_metric"] == "exact_accuracy" and meta["best_metric"] == result.best_metric


class CountingTask(PuzzleTask):
    """Counts how often a run starts from a fresh carry."""
    fresh_carries = 0

    def forward(self, model, batch, step):
        if self.carry is None:
            self.fresh_carries += 1
        return super().forward(model, batch, step)


@pytest.mark.timeout(120)
def test_resume_restores_optimizers_and_ema_and_reinitialises_the_carry(sudoku_dir: Path, tmp_path: Path):
    base = ["global_batch_size=8", "epochs=1", "ema=true", "train.ema_decay=0.9", "train.val_every=3"]
    first = CountingTask(tiny_config(sudoku_dir, *base, "train.steps=3"))
    train_in_process(first, tmp_path)
    saved = load_checkpoint(CheckpointStore(tmp_path, 0).latest())
    assert saved["step"] == 3 and len(saved["optimizers"]) == 2 and saved["task"]["ema"]["num_updates"] == 3

    second = CountingTask(tiny_config(sudoku_dir, *base, "train.steps=6"))
    result = train_in_process(second, tmp_path)
    assert result.step == 6 and second.fresh_carries == 1
    state = load_checkpoint(CheckpointStore(tmp_path, 0).latest())
    dense, sparse = state["optimizers"]
    assert all(int(s["step"]) == 6 for s in dense["state"].values())     # Adam moments carried on, not restarted
    assert sparse["param_groups"][0]["base_lr"] == pytest.approx(1e-2)  # sign-SGD's own lr survived the resume
    assert state["task"]["ema"]["num_updates"] == 6
    emb = "model.inner.puzzle_emb.weights"
    assert not torch.equal(saved["model"][emb], state["model"][emb])    # sign-SGD kept training the embedding


@pytest.mark.timeout(120)
def test_fp16_trains_the_dense_weights_through_the_scaler_and_the_embedding_by_sign_sgd(sudoku_dir: Path,
                                                                                          tmp_path: Path):
    cfg = tiny_config(sudoku_dir, "global_batch_size=8", "epochs=1", "train.steps=3", "train.val_every=3",
                      "train.mixed_precision=fp16")
    task = PuzzleTask(cfg)
    result = train_in_process(task, tmp_path)
    assert result.step == 3 and result.nonfinite_steps == 0
    state = load_checkpoint(CheckpointStore(tmp_path, 0).latest())
    assert state["scaler"]["scale"] > 0
    dense, sparse = state["optimizers"]
    assert all(int(s["step"]) == 3 for s in dense["state"].values())   # the scaler stepped the dense optimizer
    emb = state["model"]["model.inner.puzzle_emb.weights"]
    assert emb.abs().sum() > 0                                          # sign-SGD moved the (zero-initialised) rows


def dry_run_lines(capsys, *argv: str) -> dict[str, str]:
    from hrm_ray.commands.config_flags import parse_command_line
    from hrm_ray.commands.train import configure, run

    parser = argparse.ArgumentParser()
    configure(parser)
    assert run(parse_command_line(parser, ["--dry_run", *TINY, *argv])) == 0
    out = capsys.readouterr().out
    return {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]} | {"title": out.splitlines()[0]}


@pytest.mark.timeout(120)
def test_dry_run_runs_one_puzzle_segment(sudoku_dir: Path, capsys):
    generated = dry_run_lines(capsys, "global_batch_size=4")
    assert "generated Sudoku" in generated["title"] and generated["samples"] == "4"
    for key in ("loss", "lm_loss", "q_halt_loss", "q_continue_loss", "grad_norm", "puzzle_emb_grad_norm"):
        assert math.isfinite(float(generated[key]))
    assert float(generated["puzzle_emb_grad_norm"]) > 0 and generated["puzzle_emb_parameters"] == "32"
    on_data = dry_run_lines(capsys, f"data_path={sudoku_dir}", "global_batch_size=8", "epochs=1", "arch=hrm_v1_gated")
    assert str(sudoku_dir) in on_data["title"] and on_data["samples"] == "8" and "gate_L_mean" in on_data
    assert int(on_data["parameters"].replace(",", "")) > int(generated["parameters"].replace(",", ""))  # the gates


def test_epochs_must_be_a_multiple_of_eval_interval(sudoku_dir: Path):
    with pytest.raises(UserError, match=r"epochs \(5\) must be a multiple of eval_interval \(2\)"):
        tiny_config(sudoku_dir, "epochs=5", "eval_interval=2", "global_batch_size=8")
    with pytest.raises(UserError, match="global_batch_size"):
        tiny_config(sudoku_dir, "epochs=1", "global_batch_size=1000")


def test_paper_flags_map_to_fields():
    cfg = build_config(None, ["data_path=/d", "epochs=20000", "eval_interval=2000", "lr=7e-5", "puzzle_emb_lr=7e-5",
                              "weight_decay=1.0", "puzzle_emb_weight_decay=1.0", "global_batch_size=384",
                              "lr_warmup_steps=2000", "arch=hrm_v1_gated", "arch.gate_init_bias=-1.5",
                              "arch.H_cycles=3", "--hidden_size", "64", "--lr_min_ratio", "1.0", "ema=true"],
                       aliases=PAPER_FLAGS)
    assert (cfg.data.dataset, cfg.train.epochs, cfg.train.eval_interval) == ("/d", 20000, 2000)
    assert (cfg.optim.learning_rate, cfg.optim.puzzle_emb_lr, cfg.optim.weight_decay) == (7e-5, 7e-5, 1.0)
    assert (cfg.optim.puzzle_emb_weight_decay, cfg.train.global_batch_size, cfg.optim.warmup_steps) == (1.0, 384, 2000)
    assert (cfg.model.name, cfg.model.gate_init_bias, cfg.optim.lr_min_ratio, cfg.train.ema) == ("hrm_v1_gated", -1.5, 1.0, True)
    assert (cfg.model.h_cycles, cfg.model.d_model, cfg.task) == (3, 64, "puzzle")
    with pytest.raises(UserError, match="arch: unknown model 'hrm_v2' .did you mean 'hrm_v1'"):
        build_config(None, ["arch=hrm_v2"], aliases=PAPER_FLAGS)
    # One model family in the tree at a time: no flag is ambiguous between the LM and the puzzle model.
    assert build_config(None, ["--gate_init_bias", "-1"]).model.bridge.gate_init_bias == -1.0
    assert build_config(None, ["--arch", "hrm_v1", "--gate_init_bias", "-1"], aliases=PAPER_FLAGS).model.gate_init_bias == -1.0


def test_gated_preset_differs_from_hrm_v1_only_in_use_gating(sudoku_dir: Path):
    meta = load_split(sudoku_dir, "train").metadata
    plain = resolve_model(build_config(None, ["model.name=hrm_v1"]).model, meta)
    gated = resolve_model(build_config(None, ["model.name=hrm_v1_gated"]).model, meta)
    diff = {k for k, v in dataclasses.asdict(plain).items() if dataclasses.asdict(gated)[k] != v}
    assert diff == {"use_gating", "name"} and gated.use_gating
    # A field override wins over the preset, whatever the order on the command line.
    for order in (["arch=hrm_v1_gated", "arch.gate_init_bias=-1.5"], ["arch.gate_init_bias=-1.5", "arch=hrm_v1_gated"]):
        c = build_config(None, order, aliases=PAPER_FLAGS)
        resolved = resolve_model(c.model, meta)
        assert (resolved.use_gating, resolved.gate_init_bias, resolved.vocab_size) == (True, -1.5, 11)
    # The plain-transformer baseline has exactly the parameters of the HRM of the same fields.
    small = build_config(None, [*TINY, "arch=transformer_baseline"], aliases=PAPER_FLAGS).model
    hrm = build_config(None, [*TINY, "arch=hrm_v1"], aliases=PAPER_FLAGS).model
    n_params = [sum(p.numel() for p in build_puzzle_model(resolve_model(a, meta)).parameters()) for a in (small, hrm)]
    assert n_params[0] == n_params[1]


def test_wilson_interval_covers_the_point_and_closes_on_the_whole_population():
    (low_inf, high_inf), (low_fin, high_fin) = wilson_interval(30, 100, None), wilson_interval(30, 100, 10_000)
    assert low_inf < low_fin < high_fin < high_inf  # no population correction: a wider interval
    low, high = wilson_interval(30, 100, 10_000)
    assert 0.21 < low < 0.3 < high < 0.4
    assert wilson_interval(0, 50, 10_000)[1] > 0.0          # zero successes still leave room above
    assert wilson_interval(7, 20, 20) == (0.35, 0.35)


@pytest.mark.timeout(600)  # Ray + Train + Data start-up; generous for a loaded 2-core machine
def test_two_workers_train_over_ray_dataset_shards(ray_session, sudoku_dir: Path, tmp_path: Path):
    from hrm_ray.train.ray_trainer import train

    cfg = tiny_config(sudoku_dir, "ray.num_workers=2", "ray.cpus_per_worker=0.5", "global_batch_size=8", "epochs=2",
                      "eval_interval=1", f"--save_dir={tmp_path}", "--run_name=two", "ema=true")
    result = train(cfg)  # two workers and Ray Data on a 2-CPU Ray, each rank a batch of 8 / 2
    assert len(json.loads((tmp_path / "two" / "workers.json").read_text())) == 2
    assert result.step == result.total_steps == 4           # 2 iterations x (22 // 8) steps
    run = tmp_path / "two"
    latest = CheckpointStore(run, 0).latest()
    assert latest is not None and load_checkpoint(latest)["step"] == 4
    assert [r["examples"] for r in records(run, "val")][-1] == 4


def test_an_elastic_group_reads_the_same_global_batches_at_any_size(sudoku_dir: Path):
    """An elastic group (`--num_workers 1-2`) reads no Ray Dataset (whose tasks a grown group could starve of
    CPUs, and whose shards have no global position): each rank samples the split itself and takes its share
    of a global batch that does not depend on the group's size, so (iteration, batch) is a global position."""
    fixed = PuzzleTask(tiny_config(sudoku_dir, "ray.num_workers=2", "global_batch_size=8"))
    elastic = PuzzleTask(tiny_config(sudoku_dir, "ray.num_workers=1-2", "global_batch_size=8"))
    assert fixed.needs_ray_data() and not elastic.needs_ray_data()
    one = elastic.train_feed(WorkerContext())
    two = [elastic.train_feed(WorkerContext(rank=r, world_size=2)) for r in range(2)]
    for _ in range(5):
        whole, halves = one.next_batch(), [feed.next_batch() for feed in two]
        for key in whole:
            assert torch.equal(whole[key], torch.cat([h[key] for h in halves])), key
