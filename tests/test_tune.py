"""Ray Tune sweeps, one mechanism for every model family: the `tune:` search space (parsing, its errors,
seeded samples), the metric and mode each task ranks by, the flags that reach the spec, and (with Ray,
Train V2: a Tuner over a driver launching a TorchTrainer with TuneReportCallback) a tiny ASHA search in an
S3-compatible bucket that writes trials.jsonl, a best config that loads and a report; interrupted, it continues
from the bucket when rerun."""
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

from hrm_ray import storage as storage_lib
from hrm_ray.commands.config_flags import parse_command_line
from hrm_ray.commands.tune import build_spec, configure
from hrm_ray.config import build_config, from_dict, load_yaml
from hrm_ray.errors import UserError
from hrm_ray.train.loop import LoopResult
from hrm_ray.tune.space import SearchSpace
from hrm_ray.tune.sweep import (
    SweepResult,
    SweepSpec,
    _save_spec,
    best_config_yaml,
    best_row,
    finished_report,
    load_spec,
    results_table,
    run_sweep,
    sweep_metric,
    trial_rows,
)

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
STAGE_B, SUDOKU = CONFIGS / "stage_b.yaml", CONFIGS / "sudoku.yaml"
GATE_INIT_BIAS, HALTING_WEIGHT = "model.bridge.gate_init_bias", "model.hrm.halting_weight"
GATE_WARMUP = "train.hrm_gate_warmup_steps"
TINY_LM = ["--dataset", "synthetic", "--d_model", "32", "--n_heads", "2", "--max_seq_len", "32",
           "--batch_size", "8", "--eval_batch_size", "64", "--synthetic_train_size", "400",
           "--synthetic_val_size", "64", "--warmup_steps", "1", "--num_workers", "1", "--cpus_per_worker", "0.5"]


def sweep_args(tmp_path: Path, config: Path, *extra: str, demo_data: bool = False) -> argparse.Namespace:
    """`hrm-ray tune --config CONFIG --profile demo --sweep_dir ... --save_dir ... EXTRA`, parsed."""
    parser = argparse.ArgumentParser()
    configure(parser, default_config=str(config), demo_data=demo_data)
    return parse_command_line(parser, ["--profile", "demo", "--sweep_dir", str(tmp_path / "sweeps"),
                                       "--save_dir", str(tmp_path / "runs"), *extra])


def stage_b_from_scratch(tmp_path: Path, tune: str = "") -> Path:
    """A YAML extending stage_b.yaml that starts from scratch (no Stage A run), with more `tune:` lines."""
    config = tmp_path / "stage_b_tiny.yaml"
    config.write_text(f"base: {STAGE_B}\ntrain:\n  init_from: ''\neval:\n  tasks: []\n"
                      + (f"tune:\n  {tune}\n" if tune else ""))
    return config


def tune_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    """A tiny Stage B sweep whose gate warmup choices fit a few steps."""
    config = stage_b_from_scratch(tmp_path, f"{GATE_WARMUP}: {{choice: [0, 2]}}")
    return sweep_args(tmp_path, config, *TINY_LM, *extra)


def lm_spec(tmp_path: Path, space: dict, *overrides: str) -> SweepSpec:
    cfg = build_config(None, ["train.steps=40", "train.val_every=10", *overrides])
    cfg.tune.space = space
    return SweepSpec.from_config(cfg, "s", str(tmp_path))


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


def test_every_distribution_samples_seeded_values_inside_its_range():
    space = SearchSpace.parse({
        "a": {"uniform": [-3.5, -1.0]}, "b": {"loguniform": [1.0e-3, 0.2]}, "c": {"quniform": [0, 10, 2.5]},
        "d": {"qloguniform": [5, 100, 5]}, "e": {"randint": [2, 5]}, "f": {"choice": [0, 5, 10]},
        "g": {"loguniform": ["1e-4", "1e-2"]}})  # how PyYAML reads 1e-4: a string
    points = space.sample(30, seed=3)
    assert points == space.sample(30, seed=3) and points != space.sample(30, seed=4)
    for p in points:
        assert -3.5 <= p["a"] <= -1.0 and 1e-3 <= p["b"] <= 0.2 and p["c"] in (0, 2.5, 5, 7.5, 10)
        assert 5 <= p["d"] <= 100 and p["d"] % 5 == 0 and p["e"] in (2, 3, 4) and p["f"] in (0, 5, 10)
        assert 1e-4 <= p["g"] <= 1e-2
    assert {p["e"] for p in points} == {2, 3, 4}  # randint leaves HIGH out, as Tune's does
    domains = space.tune_space()  # Tune's own samplers of the same knobs
    assert (domains["a"].lower, domains["a"].upper, domains["f"].categories) == (-3.5, -1.0, [0, 5, 10])
    assert (domains["e"].lower, domains["e"].upper, domains["g"].lower) == (2, 5, 1e-4)


@pytest.mark.parametrize("spec, message", [
    ({"uniform": [-1.0, -3.5]}, "uniform needs [LOW, HIGH] with LOW < HIGH, got [-1.0, -3.5]"),
    ({"uniform": [-3.5]}, "uniform needs [LOW, HIGH] with LOW < HIGH"),
    ({"uniform": "-3.5, -1"}, "uniform needs [LOW, HIGH]"),
    ({"loguniform": [0.0, 0.2]}, "loguniform needs [LOW, HIGH] with 0 < LOW < HIGH"),
    ({"quniform": [0, 1, 0]}, "quniform needs [LOW, HIGH, Q] with LOW < HIGH, Q > 0"),
    ({"qloguniform": [1, 10, 4]}, "LOW and HIGH multiples of Q"),
    ({"randint": [0, 2.5]}, "randint needs [LOW, HIGH] of integers"),
    ({"choice": []}, "choice needs a non-empty list [A, B, ...]"),
    ({"unifrom": [0, 1]}, "unknown distribution 'unifrom' (one of uniform, loguniform, quniform, qloguniform, "
                          "randint, choice) (did you mean 'uniform'?)"),
    ({"uniform": [0, 1], "choice": [1]}, "expected one distribution such as {uniform: [LOW, HIGH]}"),
    (None, "expected one distribution"),
])
def test_a_bad_knob_is_one_line_naming_it(spec, message):
    with pytest.raises(UserError) as info:
        SearchSpace.parse({GATE_INIT_BIAS: spec})
    text = str(info.value)
    assert text.startswith(f"tune: {GATE_INIT_BIAS}: ") and message in text and "\n" not in text


def test_an_empty_space_names_the_tune_section(tmp_path):
    with pytest.raises(UserError, match="search space is empty: give the config's `tune:` section"):
        SearchSpace.parse({})
    with pytest.raises(UserError, match="`tune:` section"):
        lm_spec(tmp_path, {}).check()


def test_the_space_is_checked_against_the_config(tmp_path):
    cases = [
        ({"model.gate_init_bias": {"uniform": [-3, -1]}}, "tune: model.gate_init_bias: not a field of this config "
                                                          "(model hrm_lm) (did you mean 'model.bridge.gate_init_bias'?)"),
        ({GATE_WARMUP: {"uniform": [0, 10]}}, f"tune: {GATE_WARMUP}: an integer field: use randint"),
        ({GATE_WARMUP: {"quniform": [0, 10, 2.5]}}, "an integer field"),
        ({"model.hrm.use_halting": {"uniform": [0, 1]}}, "a bool field takes `choice` only"),
        ({HALTING_WEIGHT: {"uniform": [-0.1, 0.1]}}, f"tune: {HALTING_WEIGHT} = -0.1: {HALTING_WEIGHT}: must be >= 0"),
        ({"optim.optimizer": {"choice": ["adamw", "sgd"]}}, "tune: optim.optimizer = 'sgd': "),
    ]
    for space, message in cases:
        with pytest.raises(UserError) as info:
            lm_spec(tmp_path, space).check()
        assert message in str(info.value), str(info.value)
    lm_spec(tmp_path, {GATE_WARMUP: {"quniform": [0, 10, 5]}, "optim.optimizer": {"choice": ["adamw"]},
                       "model.hrm.use_halting": {"choice": [True, False]}}).check()
    bad_yaml = tmp_path / "bad.yaml"  # the config itself refuses a knob that is no field
    bad_yaml.write_text("tune:\n  model.bridge.gate_bias: {uniform: [-3, -1]}\n")
    with pytest.raises(UserError, match="gate_bias"):
        load_yaml(bad_yaml)


def test_the_task_decides_the_metric_and_mode(tmp_path):
    assert sweep_metric("lm") == ("val_loss", "min")
    assert sweep_metric("puzzle") == ("val_exact_accuracy", "max")
    for name, ranked in [("hrm_lm", ("val_loss", "min")), ("hrm_v1", ("val_exact_accuracy", "max")),
                         ("hrm_v1_gated", ("val_exact_accuracy", "max")),
                         ("transformer_baseline", ("val_exact_accuracy", "max"))]:
        spec = SweepSpec.from_config(build_config(None, [f"model.name={name}", "train.steps=8"]), "s", str(tmp_path))
        assert (spec.metric, spec.mode) == ranked, name


def test_flags_and_the_yaml_space_build_the_spec(tmp_path):
    stage_b = stage_b_from_scratch(tmp_path)
    spec = build_spec(sweep_args(tmp_path, stage_b, *TINY_LM, "--steps", "40", "--num_samples", "5", "--max_t", "30",
                                 "--reduction_factor", "4", "--grace_period", "8", "--max_concurrent_trials", "2",
                                 "--scheduler", "fifo", "--search_seed", "7"))
    assert (spec.num_samples, spec.max_t, spec.reduction_factor, spec.grace_period, spec.max_concurrent_trials,
            spec.scheduler, spec.seed, spec.steps) == (5, 30, 4, 8, 2, "fifo", 7, 40)
    assert spec.space == load_yaml(STAGE_B, profile="demo").tune.space  # the demo profile's gate warmups
    assert spec.space[GATE_WARMUP] == {"choice": [0, 25, 50, 100]} and (spec.metric, spec.mode) == ("val_loss", "min")
    assert spec.base["ray"]["num_workers"] == 1 and spec.base["ray"]["cpus_per_worker"] == 0.5
    assert spec.base["model"]["hrm"]["use_halting"]  # the rest of Stage B's settings travel in the base
    assert spec.storage == str(tmp_path / "sweeps") and spec.name == "sweep"
    spec.check()
    plain = build_spec(sweep_args(tmp_path, stage_b, *TINY_LM, "--steps", "40", "--val_every", "10",
                                  "--tune.num_samples", "6"))
    # max_t 0: the runs' steps; ASHA's first cut after max_t / reduction_factor^2 steps, at least one evaluation
    assert (plain.num_samples, plain.max_t, plain.scheduler, plain.grace()) == (6, 40, "asha", 10)
    with pytest.raises(UserError, match="--max_t must be <= --steps"):
        build_spec(sweep_args(tmp_path, stage_b, *TINY_LM, "--steps", "40", "--max_t", "50")).check()
    with pytest.raises(UserError, match="num_workers"):
        build_spec(sweep_args(tmp_path, stage_b, *TINY_LM, "--steps", "4", "--num_workers", "0")).check()


def test_the_sudoku_sweep_takes_its_space_from_the_yaml_and_its_steps_from_the_epochs(tmp_path):
    from hrm_ray.data.puzzles.demo import build_demo_sudoku
    from hrm_ray.tune.sweep import trial_config

    data = build_demo_sudoku(tmp_path / "six", 30, 10, 16, seed=2, box=(2, 3), log=lambda _: None)
    spec = build_spec(sweep_args(tmp_path, SUDOKU, "--epochs", "2", "--eval_interval", "1", "--global_batch_size", "8",
                                 f"data_path={data}", demo_data=True))
    # 30 puzzles an epoch, 8 a step: 3 steps an evaluation, 2 evaluations; every trial runs the same schedule
    assert (spec.max_t, spec.steps, spec.base["train"]["val_every"]) == (6, 6, 3)
    assert (spec.metric, spec.mode) == ("val_exact_accuracy", "max")
    assert spec.space["model.gate_init_bias"] == {"uniform": [-3.5, -1.0]}
    spec.check()
    cfg = trial_config(spec.base, spec.search_space().sample(1, seed=0)[0])
    assert cfg.model.use_gating and -3.5 <= cfg.model.gate_init_bias <= -1.0 and cfg.data.dataset == str(data)


def test_sweep_json_round_trips_the_space(tmp_path):
    spec = lm_spec(tmp_path, {GATE_INIT_BIAS: {"uniform": [-3.5, -1.0]}, GATE_WARMUP: {"choice": [0, 5]}})
    spec.points = spec.search_space().sample(spec.num_samples, seed=1)
    _save_spec(spec)
    stored = load_spec(spec.path)
    assert stored == spec and stored.search_space() == spec.search_space()
    Path(spec.path, "sweep.json").write_text(json.dumps({"space": {}, "space_class": "x:SearchSpace"}))
    with pytest.raises(UserError, match="older version"):
        load_spec(spec.path)


def checkpointed_trials(runs: str) -> set[str]:
    """The trials (Train runs under `runs`, a local path or a bucket URI) with a checkpoint's state.pt."""
    trials = set()
    for trial in storage_lib.list_names(runs) if storage_lib.is_dir(runs) else []:
        checkpoints = [c for c in storage_lib.list_names(f"{runs}/{trial}") if c.startswith("checkpoint_")]
        if any(storage_lib.is_file(f"{runs}/{trial}/{c}/state.pt") for c in checkpoints):
            trials.add(trial)
    return trials


@pytest.mark.timeout(300)
def test_an_interrupted_sweep_in_a_bucket_continues_when_rerun(tune_ray, s3_bucket, tmp_path):
    """One sweep on a 2-CPU Ray (the session's), with its sweep directory in an S3-compatible bucket,
    interrupted and rerun: it plans its trials, trial drivers and Ray Data into the 2 CPUs and completes; Tune
    restores it from the bucket; its trials, ASHA's decisions, trials.jsonl, best_config.yaml and the report (one
    Ray sweep in the suite: each costs about a minute on 2 cores)."""
    sweeps = f"{s3_bucket}/sweeps"
    spec = build_spec(tune_args(tmp_path, "--name", "resume", "--steps", "8", "--val_every", "2", "--sweep_dir", sweeps,
                                "--log_steps", "1", "--num_samples", "2", "--max_concurrent_trials", "1",
                                "--grace_period", "2", "--reduction_factor", "2"))
    assert spec.path == f"{sweeps}/resume"
    runs = f"{spec.path}/runs"
    done = threading.Event()

    def interrupt_after_first_checkpoint() -> None:  # Ctrl-C, once a trial has a checkpoint to resume from
        deadline = time.monotonic() + 150
        while not done.is_set() and time.monotonic() < deadline:
            if checkpointed_trials(runs):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=interrupt_after_first_checkpoint, daemon=True)
    watcher.start()
    first = run_sweep(spec, report=False)
    done.set()
    watcher.join()
    assert first.interrupted and not storage_lib.exists(f"{spec.path}/trials.jsonl")  # nothing that looks complete
    started = checkpointed_trials(runs)
    assert started

    second = run_sweep(build_spec(tune_args(tmp_path, "--name", "resume", "--steps", "8", "--sweep_dir", sweeps)))
    assert second.restored and not second.interrupted
    assert len(second.rows) == 2 and all(r.status == "TERMINATED" and (r.steps == 8 or r.stopped_early)
                                         for r in second.rows)
    for trial_id in started:  # the Train run resumed from its checkpoint instead of starting over
        records = [json.loads(x) for x in storage_lib.read_text(f"{runs}/{trial_id}/metrics.jsonl").splitlines()]
        assert [r["step"] for r in records if r["split"] == "train"].count(1) == 1
        row = next(r for r in second.rows if r.trial_id == trial_id)  # its history from step 2, not the restore
        assert [s for s, _ in row.history][:2] == [2.0, 4.0]
    # ASHA's rungs came back with the sweep: its decisions are those of one uninterrupted sweep of these trials
    assert {r.trial_id: r.stopped_early for r in second.rows} == replay_asha(second.rows, grace=2, max_t=8)
    state = json.loads(storage_lib.read_text(f"{spec.path}/asha_state.jsonl"))
    assert all(row.trial_id in state["rungs"][0][-1][1] for row in second.rows)  # everyone reached rung 2
    check_sweep_outputs(spec.path, second, steps=8, tmp_path=tmp_path)


def check_sweep_outputs(sweep: str, result: SweepResult, steps: int, tmp_path: Path) -> None:
    """trials.jsonl (a row per trial with its params, history, start values), best_config.yaml, the results
    table and the report, all in the bucket."""
    rows = [json.loads(x) for x in storage_lib.read_text(f"{sweep}/trials.jsonl").splitlines()]
    assert len(rows) == len(result.rows) and len({r["trial_id"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row["params"]) == {GATE_INIT_BIAS, HALTING_WEIGHT, GATE_WARMUP}
        assert row["status"] == "TERMINATED" and 2 <= row["steps"] <= steps and math.isfinite(row["best_val_loss"])
        assert row["history"] and all(step % 2 == 0 for step, _ in row["history"])  # a report per evaluation
        assert row["stopped_early"] == (max(step for step, _ in row["history"]) < steps)
        assert storage_lib.is_file(f"{sweep}/runs/{row['trial_id']}/metrics.jsonl")  # each trial its own Train run
        bias = row["params"][GATE_INIT_BIAS]  # the initial value it started from, and the gate it gave at step 0
        assert row["start"]["gate_init_bias"] == pytest.approx(bias)
        assert row["start"]["gate_raw_mean"] == pytest.approx(1 / (1 + math.exp(-bias)), abs=2e-3)
    assert any(not r["stopped_early"] for r in rows)  # ASHA always lets the first trial through its rungs
    best = min(rows, key=lambda r: r["best_val_loss"])
    assert result.best is not None and result.best.trial_id == best["trial_id"]
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(results_table(result))
    assert best["trial_id"] in console.export_text()
    best_yaml = tmp_path / "best_config.yaml"
    best_yaml.write_text(storage_lib.read_text(f"{sweep}/best_config.yaml"))
    cfg = build_config(str(best_yaml), [])  # what stage_b.py --config loads
    assert cfg.model.bridge.gate_init_bias == pytest.approx(best["params"][GATE_INIT_BIAS])
    assert cfg.model.hrm.halting_weight == pytest.approx(best["params"][HALTING_WEIGHT])
    assert cfg.train.hrm_gate_warmup_steps == best["params"][GATE_WARMUP]
    assert cfg.train.run_name.endswith("-best") and cfg.model.hrm.deep_supervision and cfg.data.dataset == "synthetic"
    from hrm_ray.report.build import build_report

    build_report(sweep)  # `hrm-ray report s3://...`: drawn from a copy without checkpoints, uploaded beside
    assert f"trials: {len(rows)}" in storage_lib.read_text(f"{sweep}/report/report.md")
    assert storage_lib.is_file(f"{sweep}/report/val_loss_trials.png")


def replay_asha(rows, grace: int, max_t: int, factor: int = 2) -> dict[str, bool]:
    """Whether ASHA stops each trial when their histories reach it one trial after another (val loss, min)."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    bracket, stopped = _Bracket(grace, max_t, factor, 0), {}
    for row in sorted(rows, key=lambda r: r.trial_id):
        trial = SimpleNamespace(trial_id=row.trial_id)
        stopped[row.trial_id] = any(step < max_t and bracket.on_result(trial, step, -loss) == "STOP"
                                    for step, loss in row.history)
    return stopped


def test_asha_rungs_survive_a_restore(tmp_path):
    from hrm_ray.tune.asha import PersistentASHA, rung_state

    def asha(sweep: str = "restored") -> PersistentASHA:
        return PersistentASHA(str(tmp_path / sweep), "runs", time_attr="step", metric="val_loss", mode="min", max_t=8,
                              grace_period=2, reduction_factor=2)

    trials = [SimpleNamespace(trial_id=t) for t in ("a", "b", "c")]
    losses = {"a": [1.0, 0.8, 0.7], "b": [0.9, 0.85, 0.6], "c": [1.2, 0.7, 0.65]}

    def feed(scheduler, trial, steps) -> list[str]:
        return [scheduler.on_trial_result(None, trial, {"step": 2 * (i + 1), "val_loss": losses[trial.trial_id][i]})
                for i in steps]

    whole = asha("uninterrupted")
    for trial in trials:
        whole.on_trial_add(None, trial)
    uninterrupted = [feed(whole, t, range(3)) for t in trials]
    first = asha()
    for trial in trials:
        first.on_trial_add(None, trial)
    feed(first, trials[0], range(3))
    feed(first, trials[1], range(1))  # interrupted here, after b's run logged (not reported) its step 4
    run = tmp_path / "restored" / "runs" / "b"
    run.mkdir(parents=True)
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps({"step": 2 * (i + 1), "split": "val", "loss": v}) + "\n"
                                                     for i, v in enumerate(losses["b"][:2])))
    restored = asha()  # Tune's restore: the scheduler as it was at the start, then the trials added again
    for trial in trials:
        restored.on_trial_add(None, trial)
    assert feed(restored, trials[1], range(2, 3)) == ["STOP"] and uninterrupted[1][1] == "STOP"  # cut at step 4
    assert feed(restored, trials[2], range(3)) == uninterrupted[2]
    assert rung_state(restored._brackets, restored.stopped) == rung_state(whole._brackets, whole.stopped)
    saved = json.loads((tmp_path / "restored" / "asha_state.jsonl").read_text())
    assert [m for m, _ in saved["rungs"][0]] == [8.0, 4.0, 2.0] and "b" in saved["stopped"]


def tune_result(trial_id: str, frame: dict[str, list[float]]):
    """What Tune's ResultGrid yields for one finished trial (the fields `trial_rows` reads)."""
    import pandas as pd

    return SimpleNamespace(config={"optim.learning_rate": 1e-3}, metrics={"trial_id": trial_id, "done": True},
                           metrics_dataframe=pd.DataFrame(frame), path=f"/sweep/{trial_id}", error=None)


def test_trials_rank_by_the_sweep_metric_and_mode(tmp_path):
    puzzle = build_config(None, ["model.name=hrm_v1_gated", "train.steps=4", "train.val_every=2"])
    puzzle.tune.space = {"optim.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}}
    spec = SweepSpec.from_config(puzzle, "gates", str(tmp_path))  # ranked by exact accuracy: the task's metric
    grid = [tune_result("a", {"step": [2, 4], "val_loss": [0.9, 0.5], "val_exact_accuracy": [0.1, 0.2]}),
            tune_result("b", {"step": [2, 4], "val_loss": [1.0, 0.8], "val_exact_accuracy": [0.4, 0.3]})]
    rows = trial_rows(grid, spec)
    a, b = rows
    assert (a.best_metric, b.best_metric, a.best_val_loss, b.best_val_loss) == (0.2, 0.4, 0.5, 0.8)
    assert a.history == [[2.0, 0.9], [4.0, 0.5]] and a.metric == "val_exact_accuracy"
    assert best_row(rows, "max") is b                       # the higher exact accuracy, despite its higher loss
    assert best_row(rows, "min") is a
    best_yaml = best_config_yaml(spec, b)
    assert "val_exact_accuracy 0.4000" in best_yaml.splitlines()[0]
    (tmp_path / "best_config.yaml").write_text(best_yaml)  # a full config (the sweep's own settings left out)
    best = load_yaml(tmp_path / "best_config.yaml")
    assert best.model.name == "hrm_v1_gated" and best.optim.learning_rate == 1e-3 and best.tune.space == {}
    assert "tune" not in spec.base and from_dict(json.loads(json.dumps(spec.base))).train.steps == 4
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(results_table(SweepResult(spec.path, rows, b, "", mode="max")))
    table = console.export_text()
    assert "best val_exact_accuracy" in table and table.index("b *") < table.index(" a ")
    # the LM's sweeps rank by val loss as before
    lm = lm_spec(tmp_path, {"optim.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}})
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
