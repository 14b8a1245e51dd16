"""Puzzle evaluation: ARC voting undoes the recorded augmentations; `hrm-ray eval` on a puzzle run."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hrm_ray.cli import main
from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.data.puzzles.arc import ArcBuildConfig, build_arc_dataset
from hrm_ray.data.puzzles.format import load_split
from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset
from hrm_ray.infer.puzzle_eval import Predictions, arc_vote, evaluate_puzzle_run
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.puzzle_task import PuzzleTask
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import WorkerContext


@pytest.fixture(scope="module")
def arc_dir(real_data: Path, tmp_path_factory) -> Path:
    """4 training tasks + 3 evaluation tasks (copied from the shared ARC set), 5 augmentations each."""
    tmp = tmp_path_factory.mktemp("arc")
    tasks = sorted((real_data / "arc" / "training").glob("*.json"))[:7]
    for sub, chosen in (("train", tasks[:4]), ("eval", tasks[4:])):
        (tmp / sub).mkdir()
        for path in chosen:
            shutil.copy(path, tmp / sub / path.name)
    build_arc_dataset(ArcBuildConfig(output_dir=str(tmp / "data"), tasks_dirs=[str(tmp / "train")],
                                     eval_tasks_dirs=[str(tmp / "eval")], num_aug=5), log=lambda _: None)
    return tmp / "data"


def label_predictions(split) -> Predictions:
    """'Predictions' that are the test split's own (augmented) ground truth."""
    sets, examples, tokens = [], [], []
    for name, pset in split.sets.items():
        sets += [name] * pset.num_examples
        examples.append(np.arange(pset.num_examples))
        tokens.append(np.asarray(pset.labels, dtype=np.uint8))
    n = len(sets)
    return Predictions(sets, np.concatenate(examples), np.concatenate(tokens), np.zeros(n, dtype=np.float32))


def test_arc_voting_undoes_the_recorded_augmentations(arc_dir: Path):
    test = load_split(arc_dir, "test")
    preds = label_predictions(test)
    augmented = {int(i) for i in test.sets["all"].puzzle_identifiers}
    assert len(augmented) > 3                                   # several augmented copies per task really voted
    assert arc_vote(arc_dir, test, preds) == {"pass@1": 1.0, "pass@2": 1.0, "tasks": 3.0}

    # One wrong copy per test output is outvoted by the others (identity + 5 augmentations vote).
    pset = test.sets["all"]
    wrong = preds.tokens.copy()
    first_of_puzzle = pset.puzzle_indices[pset.group_indices[:-1]]        # the first copy of each task
    wrong[first_of_puzzle] = np.where(wrong[first_of_puzzle] >= 2, 2, wrong[first_of_puzzle])  # all black
    assert arc_vote(arc_dir, test, Predictions(preds.sets, preds.examples, wrong, preds.q_halt))["pass@1"] == 1.0

    # All copies wrong the same way: the wrong answer wins, pass@1 and pass@2 both fail.
    all_wrong = np.where(preds.tokens >= 2, 2, preds.tokens)
    result = arc_vote(arc_dir, test, Predictions(preds.sets, preds.examples, all_wrong, preds.q_halt))
    assert result["pass@2"] < 1.0


def test_arc_voting_pass_at_2_keeps_the_runner_up(arc_dir: Path):
    """Every augmented copy agrees on a wrong grid, only the identity copy is right: pass@1 fails, pass@2 holds."""
    test = load_split(arc_dir, "test")
    preds = label_predictions(test)
    pset = test.sets["all"]
    example_puzzle = np.searchsorted(pset.puzzle_indices, preds.examples, side="right") - 1
    identity = np.isin(example_puzzle, pset.group_indices[:-1])   # the first puzzle of each group is the task itself
    tokens = np.where(~identity[:, None] & (preds.tokens >= 2), 2, preds.tokens).astype(np.uint8)
    result = arc_vote(arc_dir, test, Predictions(preds.sets, preds.examples, tokens, preds.q_halt))
    assert result["pass@1"] == 0.0 and result["pass@2"] == 1.0


@pytest.mark.timeout(120)
def test_hrm_ray_eval_on_a_puzzle_run(real_data: Path, tmp_path: Path, capsys):
    lines = [ln for ln in (real_data / "sudoku" / "top95.txt").read_text().splitlines() if ln.strip()][:12]
    (tmp_path / "p.txt").write_text("\n".join(lines) + "\n")
    data = tmp_path / "data"
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(data), puzzles=str(tmp_path / "p.txt"), test_size=3,
                                           workers=1), log=lambda _: None)
    cfg = build_config(None, ["model.name=hrm_v1", f"data_path={data}", "model.d_model=32", "model.n_heads=2",
                              "model.h_layers=1", "model.l_layers=1", "model.h_cycles=1", "model.l_cycles=1",
                              "model.puzzle_emb_ndim=32", "arch.halt_max_steps=2", "global_batch_size=4", "epochs=1",
                              "ema=true", "train.wandb=off", "ray.num_workers=0", "train.eval_batch_size=2",
                              "train.run_name=tiny", f"--save_dir={tmp_path / 'runs'}"], aliases=PAPER_FLAGS)
    task = PuzzleTask(resolve_config(cfg))
    torch.set_num_threads(1)
    run_dir = tmp_path / "runs" / "tiny"
    result = run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, 2), RunFiles(str(run_dir)))
    (run_dir / "config.yaml").write_text((run_dir / "best-model" / "config.yaml").read_text())

    assert main(["eval", "--run_name", "tiny", "--save_dir", str(tmp_path / "runs"), "--batch_size", "2"]) == 0
    out = capsys.readouterr().out
    assert "exact accuracy" in out and "3 examples" in out
    # best-model/ holds the EMA weights: its evaluation is the run's last validation; a checkpoint's EMA
    # shadow gives the same numbers.
    from_best = evaluate_puzzle_run(run_dir / "best-model", batch_size=2)
    checkpoint = sorted(run_dir.glob("checkpoint_*"))[-1]
    from_checkpoint = evaluate_puzzle_run(checkpoint, batch_size=3)
    assert from_best["loss"] == pytest.approx(result.last_val["loss"], rel=1e-5)
    assert from_checkpoint["loss"] == pytest.approx(from_best["loss"], rel=1e-5)
    assert from_best["examples"] == 3
