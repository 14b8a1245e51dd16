"""What a user of the seed documents reads back: puzzle run reports (accuracy, ACT steps, gates), epochs in
puzzle log lines, `hrm-ray plan`'s examples per group and warmup rule, how often a mix repeats a source,
templates typed with `\\n`, and a run's W&B identity (its code version: tests/test_coming_from.py)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from hrm_ray.cli import main as cli_main
from hrm_ray.config import build_config
from hrm_ray.data.mix import MixReport
from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata
from hrm_ray.data.puzzles.plan import compute_plan
from hrm_ray.report.build import build_report
from hrm_ray.train.metrics import train_line, wandb_identity
from hrm_ray.train.puzzle_task import PuzzleTask

pytestmark = pytest.mark.timeout(60)
PNG = b"\x89PNG\r\n\x1a\n"


def puzzle_metrics(run: Path) -> None:
    """metrics.jsonl with the keys a gated puzzle run logs (copied from a real run's lines)."""
    run.mkdir(parents=True)
    lines = []
    for step in range(2, 21, 2):
        lines.append({"step": step, "split": "train", "lm_loss": 2.4, "q_halt_loss": 0.01, "q_continue_loss": 0.04,
                      "gate_L_mean": 0.1 + step / 100, "gate_L_sat_low": 1 - step / 20, "gate_L_sat_high": 0.0,
                      "gate_L_contribution": 0.5, "gate_H_mean": 0.1, "gate_H_sat_low": 1.0, "gate_H_sat_high": 0.0,
                      "gate_H_contribution": 0.2, "loss": 2.5 - step / 100, "grad_norm": 1.1, "lr": 1e-4,
                      "tokens_per_s": 500.0, "nonfinite_steps": 0, "accuracy": 0.1 + step / 50, "exact_accuracy": 0.0,
                      "q_halt_accuracy": 1.0, "steps": 2.0, "count": 8.0, "epoch": step * 0.4})
        if step % 10 == 0:
            lines.append({"step": step, "split": "val", "accuracy": 0.2, "exact_accuracy": step / 100,
                          "q_halt_accuracy": 0.9, "steps": 2.0, "loss": 2.5, "examples": 4.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_puzzle_report_draws_accuracy_act_steps_and_gates(tmp_path: Path):
    run = tmp_path / "sudoku"
    puzzle_metrics(run)
    report = build_report(run).read_text()
    for name in ("accuracy.png", "act_steps.png", "puzzle_gates.png"):
        assert (run / "report" / name).read_bytes().startswith(PNG) and f"]({name})" in report
    assert "best val exact match | 0.2000" in report


def test_puzzle_log_lines_carry_the_epoch():
    cfg = SimpleNamespace(train=SimpleNamespace(eval_interval=2, epochs=4))
    task = SimpleNamespace(cfg=cfg, schedule=SimpleNamespace(steps_per_iteration=5))
    assert [PuzzleTask.epoch_at(task, n) for n in (0, 1, 5, 8, 10)] == [0.0, 0.4, 2.0, 3.2, 4.0]
    line = train_line(8, 10, {"loss": 2.5, "lr": 1e-4, "epoch": 3.2}, 2.0)
    assert "step 8/10" in line and "epoch 3.20" in line


def test_plan_counts_a_group_s_augmentations_and_applies_the_warmup_rule(tmp_path: Path, capsys):
    meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
                                 num_puzzle_identifiers=1, total_groups=22, mean_puzzle_examples=1.0, sets=["all"])
    p = compute_plan(meta, 8, 4, 2, 0, examples_per_group=4.0, warmup_examples_factor=2)
    assert (p.examples_per_group, p.examples_per_puzzle, p.examples_per_epoch) == (4.0, 1.0, 22.0)
    assert p.warmup_updates == 6  # ceil(2 x 22 / 8)
    from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset

    puzzles = Path(__file__).parent / "data" / "sudoku" / "top95.txt"
    (tmp_path / "p.txt").write_text("\n".join([ln for ln in puzzles.read_text().splitlines() if ln.strip()][:10]))
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(tmp_path / "d"), puzzles=str(tmp_path / "p.txt"), num_aug=3,
                                           test_size=2, workers=1), log=lambda _: None)
    assert cli_main(["plan", "--dataset", str(tmp_path / "d"), "--global_batch_size", "4", "--epochs", "4",
                     "--eval_interval", "2", "--warmup_examples_factor", "2"]) == 0
    out = capsys.readouterr().out
    assert "examples per group:    4 (a puzzle and its augmentations)" in out
    assert "examples per epoch:    8" in out and "lr_warmup_steps=4" in out


def test_a_mix_says_how_often_each_source_repeats():
    sources = [{"path": "big", "weight": 0.9, "available": 10_000_000, "quota": 4_500_000, "reused": 0,
                "realised": 4_500_000, "realised_share": 0.9},
               {"path": "tiny", "weight": 0.1, "available": 204, "quota": 500_000, "reused": 499_796,
                "realised": 500_000, "realised_share": 0.1}]
    text = MixReport("out", {"train": {"total": 5_000_000, "sources": sources}}).summary()
    assert "reused 499796 (each row used 2,450-2,451 times, 2,451.0 on average)" in text
    assert "warning: train: tiny: each of its 204 rows is used 2,451.0 times" in text
    assert text.count("warning") == 1


def test_templates_typed_with_backslash_n_get_a_newline(tmp_path: Path):
    (tmp_path / "qa.jsonl").write_text('{"question": "Q", "context": "C", "answer": "A"}\n')
    assert cli_main(["data", "normalize-qa", "--input", str(tmp_path / "qa.jsonl"), "--output", str(tmp_path / "o.jsonl"),
                     "--context-field", "context", "--prompt-template", "{question}\\nContext: {context}\\t\\\\"]) == 0
    assert json.loads((tmp_path / "o.jsonl").read_text())["prompt"] == "Q\nContext: C\t\\"


def test_wandb_runs_never_append_unless_resumed():
    project, run_id, resume = wandb_identity("hrm-ray", "", {"project": "old", "id": "abc"}, resumed=False)
    assert project == "hrm-ray" and run_id != "abc" and resume == "never"  # a reused run name: a new W&B run
    assert wandb_identity("p", "", None, resumed=False)[1] != wandb_identity("p", "", None, resumed=False)[1]
    assert wandb_identity("p", "", {"project": "old", "id": "abc"}, resumed=True) == ("old", "abc", "allow")
    assert wandb_identity("p", "mine", None, resumed=False) == ("p", "mine", "never")
    cfg = build_config(None, ["project_name=HRM-Gating", "--wandb_run_id", "r1"])
    assert (cfg.train.wandb_project, cfg.train.wandb_run_id) == ("HRM-Gating", "r1")
