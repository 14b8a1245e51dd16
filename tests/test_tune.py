"""Ray Tune sweeps (Train V2: a Tuner over a driver launching a TorchTrainer with TuneReportCallback):
a tiny ASHA search writes trials.jsonl, a best config that loads, and a report; an interrupted sweep
continues where it stopped when rerun."""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from hrm_ray.commands.tune import build_spec, configure, run
from hrm_ray.config import build_config, to_dict
from hrm_ray.errors import UserError
from hrm_ray.train.loop import LoopResult
from hrm_ray.tune.sweep import (
    GATE_INIT_BIAS,
    GATE_WARMUP,
    HALTING_WEIGHT,
    SearchSpace,
    SweepResult,
    SweepSpec,
    best_config_yaml,
    best_row,
    finished_report,
    results_table,
    run_sweep,
    trial_rows,
)

STAGE_B = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "stage_b.yaml"


def tune_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure(parser, default_config=str(STAGE_B))
    return parser.parse_args([
        "--profile", "demo", "--dataset", "synthetic", "--init_from=", "--sweep_dir", str(tmp_path / "sweeps"),
        "--save_dir", str(tmp_path / "runs"), "--d_model", "32", "--n_heads", "2", "--max_seq_len", "32",
        "--batch_size", "8", "--eval_batch_size", "64", "--synthetic_train_size", "400",
        "--synthetic_val_size", "64", "--warmup_steps", "1", "--num_workers", "1", "--cpus_per_worker", "0.5",
        *extra])


@pytest.fixture
def tune_ray(ray_session):
    """The session Ray, with the placement groups a sweep test leaves behind released afterwards: ASHA
    kills the trials it stops, and without a dashboard (the session Ray has none) Ray Train's
    PlacementGroupCleaner cannot see their controllers die. `run_sweep` starts its own Ray with one."""
    from ray.util.placement_group import PlacementGroup, placement_group_table, remove_placement_group

    before = set(placement_group_table())
    yield ray_session
    for pg_id, info in placement_group_table().items():
        if pg_id not in before and info["state"] != "REMOVED":
            remove_placement_group(PlacementGroup(ray_session.PlacementGroupID(bytes.fromhex(pg_id))))


def test_search_space_samples_are_seeded_and_inside_the_ranges():
    space = SearchSpace(gate_warmup_steps=(0, 5, 10))
    points = space.sample(8, seed=3)
    assert points == space.sample(8, seed=3) and points != space.sample(8, seed=4)
    for p in points:
        assert -3.5 <= p[GATE_INIT_BIAS] <= -1.0 and 1e-3 <= p[HALTING_WEIGHT] <= 0.2 and p[GATE_WARMUP] in (0, 5, 10)
    assert SearchSpace().resolved(400).gate_warmup_steps == (0, 50, 100, 200)
    with pytest.raises(UserError, match="search_halting_weight"):
        SearchSpace(halting_weight=(0.0, 0.1)).check()


def test_sweep_flags_build_the_spec(tmp_path):
    spec = build_spec(tune_args(tmp_path, "--steps", "40", "--num_samples", "5", "--max_concurrent_trials", "2",
                                "--search_gate_warmup", "0,10", "--search_learning_rate", "1e-4,1e-2",
                                "--search_halting_weight", "off", "--use_gpu", "false"))
    assert spec.num_samples == 5 and spec.max_concurrent_trials == 2 and spec.max_t == 40
    assert spec.space.gate_warmup_steps == (0, 10) and spec.space.learning_rate == (1e-4, 1e-2)
    assert spec.space.halting_weight is None
    assert spec.base["ray"]["num_workers"] == 1 and spec.base["ray"]["cpus_per_worker"] == 0.5
    assert spec.base["model"]["hrm"]["use_halting"]  # the rest of Stage B's settings travel in the base
    assert spec.storage == str(tmp_path / "sweeps")
    with pytest.raises(UserError, match="num_workers"):
        build_spec(tune_args(tmp_path, "--steps", "4", "--num_workers", "0")).check()


@pytest.mark.timeout(240)
def test_asha_sweep_writes_trials_best_config_and_report(tune_ray, tmp_path, capsys):
    args = tune_args(tmp_path, "--name", "tiny", "--steps", "6", "--val_every", "2", "--log_steps", "2",
                     "--num_samples", "3", "--max_concurrent_trials", "2", "--grace_period", "2",
                     "--reduction_factor", "2", "--search_gate_warmup", "0,2")
    assert run(args) == 0
    out = capsys.readouterr().out
    sweep = tmp_path / "sweeps" / "tiny"
    rows = [json.loads(x) for x in (sweep / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and len({r["trial_id"] for r in rows}) == 3
    for row in rows:
        assert set(row["params"]) == {GATE_INIT_BIAS, HALTING_WEIGHT, GATE_WARMUP}
        assert row["status"] == "TERMINATED" and 2 <= row["steps"] <= 6 and math.isfinite(row["best_val_loss"])
        assert row["history"] and all(step % 2 == 0 for step, _ in row["history"])  # a report per evaluation
        assert row["stopped_early"] == (max(step for step, _ in row["history"]) < 6)
        assert (sweep / "runs" / row["trial_id"] / "metrics.jsonl").is_file()  # each trial its own Train run
    assert any(not r["stopped_early"] for r in rows)  # ASHA always lets the first trial through its rungs
    best = min(rows, key=lambda r: r["best_val_loss"])
    assert f"best trial {best['trial_id']}: val loss {best['best_val_loss']:.4f}" in out  # after the table
    cfg = build_config(str(sweep / "best_config.yaml"), [])  # what stage_b.py --config loads
    assert cfg.model.bridge.gate_init_bias == pytest.approx(best["params"][GATE_INIT_BIAS])
    assert cfg.model.hrm.halting_weight == pytest.approx(best["params"][HALTING_WEIGHT])
    assert cfg.train.hrm_gate_warmup_steps == best["params"][GATE_WARMUP]
    assert cfg.train.run_name == "tiny-best" and cfg.model.hrm.deep_supervision and cfg.data.dataset == "synthetic"
    report = (sweep / "report" / "report.md").read_text()
    assert "trials: 3" in report and (sweep / "report" / "val_loss_trials.png").is_file()


@pytest.mark.timeout(240)
def test_an_interrupted_sweep_continues_when_rerun(tune_ray, tmp_path):
    spec = build_spec(tune_args(tmp_path, "--name", "resume", "--steps", "8", "--val_every", "2",
                                "--log_steps", "1", "--num_samples", "2", "--max_concurrent_trials", "1",
                                "--scheduler", "fifo", "--search_gate_warmup", "0"))
    runs = Path(spec.path) / "runs"
    done = threading.Event()

    def interrupt_after_first_checkpoint() -> None:  # Ctrl-C, once a trial has a checkpoint to resume from
        deadline = time.monotonic() + 150
        while not done.is_set() and time.monotonic() < deadline:
            if any(runs.glob("*/checkpoint_*/state.pt")):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=interrupt_after_first_checkpoint, daemon=True)
    watcher.start()
    first = run_sweep(spec, report=False)
    done.set()
    watcher.join()
    assert first.interrupted and not (Path(spec.path) / "trials.jsonl").exists()  # nothing that looks complete
    started = {p.parent.parent.name for p in runs.glob("*/checkpoint_*/state.pt")}
    assert started

    second = run_sweep(build_spec(tune_args(tmp_path, "--name", "resume", "--steps", "8")), report=False)
    assert second.restored and not second.interrupted
    assert len(second.rows) == 2 and all(r.status == "TERMINATED" and r.steps == 8 for r in second.rows)
    for trial_id in started:  # the Train run resumed from its checkpoint instead of starting over
        records = [json.loads(x) for x in (runs / trial_id / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if r["split"] == "train"].count(1) == 1
    assert (Path(spec.path) / "trials.jsonl").is_file() and (Path(spec.path) / "best_config.yaml").is_file()


def tune_result(trial_id: str, frame: dict[str, list[float]]):
    """What Tune's ResultGrid yields for one finished trial (the fields `trial_rows` reads)."""
    import pandas as pd

    return SimpleNamespace(config={"optim.learning_rate": 1e-3}, metrics={"trial_id": trial_id, "done": True},
                           metrics_dataframe=pd.DataFrame(frame), path=f"/sweep/{trial_id}", error=None)


def test_trials_rank_by_the_sweep_metric_and_mode(tmp_path):
    base = build_config(None, ["task=puzzle", "train.steps=4", "train.val_every=2"])
    spec = SweepSpec(base=to_dict(base), name="gates", storage=str(tmp_path), metric="val_exact_accuracy",
                     mode="max")
    grid = [tune_result("a", {"step": [2, 4], "val_loss": [0.9, 0.5], "val_exact_accuracy": [0.1, 0.2]}),
            tune_result("b", {"step": [2, 4], "val_loss": [1.0, 0.8], "val_exact_accuracy": [0.4, 0.3]})]
    rows = trial_rows(grid, spec)
    a, b = rows
    assert (a.best_metric, b.best_metric, a.best_val_loss, b.best_val_loss) == (0.2, 0.4, 0.5, 0.8)
    assert a.history == [[2.0, 0.9], [4.0, 0.5]] and a.metric == "val_exact_accuracy"
    assert best_row(rows, "max") is b                       # the higher exact accuracy, despite its higher loss
    assert best_row(rows, "min") is a
    header = best_config_yaml(spec, b).splitlines()[0]
    assert "val_exact_accuracy 0.4000" in header
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(results_table(SweepResult(spec.path, rows, b, "", mode="max")))
    table = console.export_text()
    assert "best val_exact_accuracy" in table and table.index("b *") < table.index(" a ")
    # the LM's sweeps rank by val loss as before
    lm = SweepSpec(base=to_dict(base), name="lm", storage=str(tmp_path))
    lm_rows = trial_rows(grid, lm)
    assert best_row(lm_rows) is lm_rows[0] and lm_rows[0].best_metric == lm_rows[0].best_val_loss == 0.5
    assert "val loss 0.5000" in best_config_yaml(lm, lm_rows[0]).splitlines()[0]


def test_a_finished_trial_reports_its_best_under_the_sweep_metric():
    done = LoopResult(step=8, total_steps=8, best_val_loss=0.7, selection_metric="exact_accuracy",
                      best_metric=0.25, already_done=True)
    assert finished_report(done, "val_exact_accuracy") == {"step": 8, "val_loss": 0.7, "val_exact_accuracy": 0.25,
                                                           "best_val_loss": 0.7}
    lm = LoopResult(step=8, total_steps=8, best_val_loss=0.7, best_metric=0.7, already_done=True)
    assert finished_report(lm, "val_loss")["val_loss"] == 0.7
    with pytest.raises(UserError, match="val_perplexity"):
        finished_report(lm, "val_perplexity")
