"""`hrm-ray report` on a run directory (metrics.jsonl) and on sweep directories (Ray Tune layout and
trials.jsonl): the figures and report.md appear, missing metrics skip panels, bad input is a UserError."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from hrm_ray.cli import main as cli_main
from hrm_ray.errors import UserError
from hrm_ray.report.build import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_FIGURES = ["loss.png", "lr.png", "gate.png", "gate_by_source.png", "halt.png", "throughput.png"]
SWEEP_FIGURES = ["val_loss_trials.png", "params_vs_loss.png"]


def write_metrics(run_dir: Path, steps: int = 200, log_every: int = 10, val_every: int = 50,
                  with_hrm: bool = True) -> None:
    """A run shaped like the trainer's metrics.jsonl: gate closed for 60 steps then opening, halt Σ
    drifting towards its target, loss falling; one non-finite value as the logger writes it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for step in range(log_every, steps + 1, log_every):
        scale = 0.0 if step <= 60 else min(1.0, (step - 60) / 60)
        record = {"step": step, "split": "train", "loss": 4.0 * math.exp(-step / 150) + 1.0, "ce": 3.0,
                  "lr": 3e-4 * min(1.0, step / 40), "grad_norm": 1.5 if step != 30 else "nan",
                  "tokens_per_s": 1000.0 + step, "nonfinite_steps": 0, "gate_scale": scale}
        if with_hrm:
            g = 0.1 * scale + 0.2 * scale * step / steps
            record.update(gate_mean=g, gate_min=0.8 * g, gate_max=1.2 * g, gate_sat_low=0.5, gate_sat_high=0.0,
                          halt_sum_mean=2.0 - step / steps, halt_sum_min=1.6 - step / steps,
                          halt_sum_max=2.4 - step / steps, halt_target=1.0, cycles_used=2.0,
                          gate_src_language=0.5 * g, gate_src_sudoku6=1.5 * g)
        lines.append(json.dumps(record))
        if step % val_every == 0:
            lines.append(json.dumps({"step": step, "split": "val", "loss": 3.5 * math.exp(-step / 150) + 1.1,
                                     "perplexity": 9.0, "tokens": 341.0}))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def assert_figures(out: Path, names: list[str]) -> str:
    report = (out / "report.md").read_text()
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        assert f"]({name})" in report, f"report.md does not show {name}"
    return report


@pytest.mark.timeout(60)
def test_run_report_writes_every_panel_and_summary(tmp_path: Path) -> None:
    run = tmp_path / "stage_b"
    write_metrics(run)
    report_md = build_report(run)
    assert report_md == run / "report" / "report.md"
    report = assert_figures(run / "report", RUN_FIGURES)
    assert "| steps | 200 |" in report
    best = 3.5 * math.exp(-200 / 150) + 1.1
    assert f"| best val loss | {best:.4f} at step 200 |" in report
    assert f"| final train loss | {4.0 * math.exp(-200 / 150) + 1.0:.4f} |" in report
    assert "| tokens/s (median) | 1,105 |" in report
    assert "gate μ at end | 0.300 [0.240, 0.360], gate scale 1.00" in report
    assert "halt Σ at end | 1.000 (target 1.00)" in report
    assert "| gate μ by source at end | language 0.150, sudoku6 0.450 |" in report
    assert "## Notes" not in report
    assert not [p for p in run.iterdir() if p.name.startswith(".report")], "staging folder left behind"


@pytest.mark.timeout(60)
def test_run_report_skips_missing_panels_and_says_so(tmp_path: Path) -> None:
    run = tmp_path / "plain"
    write_metrics(run, steps=40, val_every=20, with_hrm=False)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 50, "split": "tra')  # a run killed mid-write
    out = tmp_path / "elsewhere"
    build_report(run, out)
    report = assert_figures(out, ["loss.png", "lr.png", "throughput.png"])
    assert not (out / "gate.png").exists() and not (out / "halt.png").exists()
    assert "gate panel skipped: no gate_mean" in report
    assert "halt panel skipped: no halt_sum_mean" in report
    assert "last line of metrics.jsonl is incomplete" in report
    assert "| steps | 40 |" in report


@pytest.mark.timeout(60)
def test_resumed_run_keeps_the_later_line_per_step(tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    run.mkdir()
    rows = [{"step": 10, "split": "val", "loss": 3.0}, {"step": 20, "split": "val", "loss": 2.0},
            {"step": 20, "split": "val", "loss": 2.5}, {"step": 10, "split": "train", "loss": 3.2}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = (build_report(run)).read_text()
    assert "| final val loss | 2.5000 at step 20 |" in report


@pytest.mark.timeout(60)
def test_run_report_draws_per_source_validation_and_task_metrics_beside_the_gates(tmp_path: Path) -> None:
    run = tmp_path / "stage_c"
    write_metrics(run)  # gate_src_language, gate_src_sudoku6 on the train lines
    with open(run / "metrics.jsonl", "a") as f:
        for step in (50, 100, 150, 200):
            f.write(json.dumps({"step": step, "split": "val", "loss": 3.0 - step / 200, "language/loss": 3.2 - step / 400,
                                "sudoku6/loss": 2.0 - step / 100, "language/tokens": 300.0}) + "\n")
            if step % 100 == 0:
                f.write(json.dumps({"step": step, "split": "eval", "gsm8k/exact_match": step / 1000}) + "\n")
    report = assert_figures(build_report(run).parent, [*RUN_FIGURES, "reasoning.png"])
    assert "| final val loss by source | language 2.7000, sudoku6 0.0000 |" in report
    assert "| gsm8k/exact_match | 0.2000 at step 200 (best 0.2000 at step 200) |" in report


def write_tune_trial(sweep: Path, index: int, params: dict, losses: list[float]) -> None:
    """One trial folder as Ray Tune writes it: params.json, result.json (a line per report), progress.csv."""
    trial_id = f"abc12_{index:05d}"
    folder = sweep / (f"driver_{trial_id}_{index}_" + ",".join(f"{k}={v}" for k, v in params.items()))
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    rows = [{"step": 10 * (i + 1), "val_loss": loss, "best_val_loss": min(losses[: i + 1]), "done": False,
             "training_iteration": i + 1, "trial_id": trial_id, "config": params} for i, loss in enumerate(losses)]
    (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(folder / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "val_loss", "training_iteration", "trial_id"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.timeout(60)
def test_sweep_report_from_tune_layout(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep_stage_b"
    sweep.mkdir()
    (sweep / "tuner.pkl").write_bytes(b"")
    (sweep / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    trials = [({"gate_init_bias": -3.2, "halting_weight": 0.002, "hrm_gate_warmup_steps": 0}, [3.0, 2.6, 2.3, 2.1]),
              ({"gate_init_bias": -2.2, "halting_weight": 0.02, "hrm_gate_warmup_steps": 100}, [3.0, 2.5, 2.2, 1.9]),
              ({"gate_init_bias": -1.5, "halting_weight": 0.15, "hrm_gate_warmup_steps": 0}, [3.3]),
              ({"gate_init_bias": -1.1, "halting_weight": 0.08, "hrm_gate_warmup_steps": 100}, [3.4, 3.1])]
    for i, (params, losses) in enumerate(trials):
        write_tune_trial(sweep, i, params, losses)
    report = assert_figures(build_report(sweep).parent, SWEEP_FIGURES)
    assert "| trial | gate_init_bias | halting_weight | hrm_gate_warmup_steps | best val loss | steps run | stopped early |" in report
    assert "| `abc12_00001` | -2.2 | 0.02 | 100 | 1.9000 | 40 | no |" in report
    assert "| `abc12_00002` | -1.5 | 0.15 | 0 | 3.3000 | 10 | yes |" in report
    assert "| `abc12_00003` | -1.1 | 0.08 | 100 | 3.1000 | 20 | yes |" in report
    assert "trials: 4 (2 stopped early, 2 kept)" in report
    assert "trial-steps run: 110 of 160" in report
    assert "best: trial `abc12_00001`, val loss 1.9000" in report
    # the table is ordered by best val loss
    assert report.index("abc12_00001") < report.index("| `abc12_00000`") < report.index("| `abc12_00003`")


@pytest.mark.timeout(60)
def test_sweep_report_from_progress_csv_only(tmp_path: Path) -> None:
    sweep = tmp_path / "csv_sweep"
    for i, (bias, losses) in enumerate([(-3.0, [2.0, 1.5]), (-1.0, [2.5])]):
        write_tune_trial(sweep, i, {"gate_init_bias": bias}, losses)
        folder = next(sweep.glob(f"driver_abc12_{i:05d}_*"))
        (folder / "result.json").unlink()
    report = (build_report(sweep)).read_text()
    assert "| `abc12_00000` | -3 | 1.5000 | 20 | no |" in report
    assert "| `abc12_00001` | -1 | 2.5000 | 10 | yes |" in report


@pytest.mark.timeout(60)
def test_sweep_report_from_trials_jsonl(tmp_path: Path) -> None:
    sweep = tmp_path / "table_sweep"
    sweep.mkdir()
    records = [
        {"trial_id": "t0", "params": {"train": {"lr": 1e-3}, "gate_init_bias": -2.0}, "best_val_loss": 1.8,
         "steps": 300, "stopped_early": False, "history": [[100, 2.4], [200, 2.0], [300, 1.8]]},
        {"trial_id": "t1", "params": {"train": {"lr": 3e-4}, "gate_init_bias": -3.0}, "best_val_loss": 2.6,
         "steps": 100, "stopped_early": True, "history": [[100, 2.6]]},
    ]
    (sweep / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = assert_figures(build_report(sweep, tmp_path / "out").parent, SWEEP_FIGURES)
    assert "| trial | gate_init_bias | train.lr | best val loss | steps run | stopped early |" in report
    assert "| `t1` | -3 | 0.0003 | 2.6000 | 100 | yes |" in report


def test_puzzle_sweep_report_ranks_by_exact_accuracy(tmp_path: Path) -> None:
    """A puzzle sweep ranks by val_exact_accuracy (max), even when another trial has the lower loss."""
    sweep = tmp_path / "puzzle_sweep"
    sweep.mkdir()
    records = [
        {"trial_id": "low_loss", "params": {"model.gate_init_bias": -2.2}, "best_val_loss": 0.9, "steps": 200,
         "stopped_early": False, "metric": "val_exact_accuracy", "mode": "max", "best_metric": 0.31,
         "history": [[100, 1.1], [200, 0.9]]},
        {"trial_id": "high_exact", "params": {"model.gate_init_bias": -1.0}, "best_val_loss": 1.0, "steps": 200,
         "stopped_early": False, "metric": "val_exact_accuracy", "mode": "max", "best_metric": 0.52,
         "history": [[100, 1.2], [200, 1.0]]},
    ]
    (sweep / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = build_report(sweep, tmp_path / "out").read_text()
    assert "- best by val_exact_accuracy (max): trial `high_exact`, val_exact_accuracy 0.5200" in report
    assert "| trial | model.gate_init_bias | best val_exact_accuracy | best val loss | steps run | stopped early |" in report
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `high_exact` | -1 | 0.5200 | 1.0000 |") and rows[1].startswith("| `low_loss`")


@pytest.mark.timeout(60)
def test_bad_inputs_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "nothing_here"
    (empty / "checkpoint_00000010").mkdir(parents=True)
    with pytest.raises(UserError, match="nothing_here: neither a run directory"):
        build_report(empty)
    assert not (empty / "report").exists()
    with pytest.raises(UserError, match="no such directory"):
        build_report(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\nnot json\n{"step": 2, "split": "val"}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: not a JSON object"):
        build_report(broken)
    (broken / "metrics.jsonl").write_text('{"split": "train", "loss": 1.0}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:1: missing field 'step'"):
        build_report(broken)
    assert not [p for p in broken.iterdir() if "report" in p.name], "a failed report left files behind"
    # through the CLI: one line on stderr, exit status 2
    assert cli_main(["report", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nothing_here" in err[0]


@pytest.mark.timeout(60)
def test_cli_report_replaces_an_old_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    write_metrics(run, steps=30, val_every=10, with_hrm=False)
    (run / "report").mkdir()
    (run / "report" / "stale.png").write_bytes(b"old")
    assert cli_main(["report", str(run)]) == 0
    assert "report.md" in capsys.readouterr().out
    assert not (run / "report" / "stale.png").exists()
    assert (run / "report" / "loss.png").read_bytes().startswith(PNG_MAGIC)
