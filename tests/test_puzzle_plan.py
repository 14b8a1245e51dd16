"""`hrm-ray plan` numbers and warnings."""
from __future__ import annotations

import pytest

from hrm_ray.cli import main as cli_main
from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata
from hrm_ray.data.puzzles.plan import compute_plan

pytestmark = pytest.mark.timeout(30)


def meta(groups: int, per: float = 1.0) -> PuzzleDatasetMetadata:
    return PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
                                 num_puzzle_identifiers=1, total_groups=groups, mean_puzzle_examples=per, sets=["all"])


def test_paper_sudoku_plan_is_clean():
    # Sudoku-Extreme 1k: 1000 groups, batch 384, 20000 epochs, eval every 2000, warmup 2000
    p = compute_plan(meta(1000), 384, 20000, 2000, 2000)
    assert p.steps_per_eval_cycle == 2000 * 1000 // 384 == 5208
    assert p.total_steps == 52080 and p.evaluations == 10 and p.warmup_updates == 2000
    assert p.warnings == [next(w for w in p.warnings if w.startswith("fractional"))]


def test_plan_numbers_with_multi_example_puzzles():
    p = compute_plan(meta(400, 4.5), 100, 100, 10, 50)
    assert p.examples_per_epoch == 1800 and p.steps_per_epoch == 18
    assert p.steps_per_eval_cycle == 180 and p.total_steps == 1800 and p.warnings == []


def test_plan_warnings():
    p = compute_plan(meta(50), 64, 100, 50, 5)
    text = " | ".join(p.warnings)
    assert "far from 10:1" in text
    assert "only 5 gradient updates in warmup" in text
    assert "larger than the number of groups (50)" in text
    assert "fractional steps per epoch" in text
    p = compute_plan(meta(100), 100, 10, 1, 500)
    assert any("never reaches its peak" in w for w in p.warnings)
    assert compute_plan(meta(5), 64, 10, 1, 0).warnings[0].startswith("no training step")
    with pytest.raises(ValueError, match="multiple of eval_interval"):
        compute_plan(meta(100), 10, 100, 30, 10)


def test_plan_cli(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    meta(1000).save(tmp_path / "train" / "dataset.json")
    args = ["--dataset", str(tmp_path), "--global_batch_size", "100", "--epochs", "100", "--eval_interval", "10",
            "--lr_warmup_steps", "100"]
    assert cli_main(["plan", *args]) == 0
    out = capsys.readouterr().out
    for line in ("groups:                1000", "steps per epoch:       10", "steps per eval cycle:  100",
                 "total steps:           1000", "warmup updates:        100"):
        assert line in out
    assert "warning" not in out
    assert cli_main(["plan", *args[:-4], "--eval_interval", "7"]) == 2
    assert "error: epochs (100) must be a multiple of eval_interval (7)" in capsys.readouterr().err
    assert cli_main(["plan", "--dataset", str(tmp_path / "nope"), "--global_batch_size", "1", "--epochs", "1",
                     "--eval_interval", "1"]) == 2
    assert "dataset metadata not found" in capsys.readouterr().err
