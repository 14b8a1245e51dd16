"""Test-time depth (`hrm-ray eval --halt_max_steps K`) and Sudoku voting over symmetric views."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hrm_ray.cli import main
from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.data.puzzles.demo import build_small_sudoku, small_sudoku_examples
from hrm_ray.data.puzzles.format import load_split
from hrm_ray.data.puzzles.sudoku_symmetry import infer_box, is_valid_grid, random_symmetry
from hrm_ray.errors import UserError
from hrm_ray.infer.puzzle_eval import evaluate_puzzle_run, load_puzzle_model
from hrm_ray.infer.sudoku_vote import sudoku_vote, vote
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.puzzle_task import PuzzleTask
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import WorkerContext


@pytest.fixture(scope="module")
def sudoku_4x4(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sudoku4") / "data"
    return build_small_sudoku(out, 64, 8, blanks=6, box=(2, 2), seed=0, log=lambda _: None)


@pytest.fixture(scope="module")
def trained_run(sudoku_4x4: Path, tmp_path_factory) -> Path:
    """A tiny TRM trained 8 steps at depth 2 (halt_max_steps=2)."""
    runs = tmp_path_factory.mktemp("runs")
    cfg = build_config(None, ["arch=trm_att", f"data_path={sudoku_4x4}", "model.d_model=16", "model.n_heads=2",
                              "model.mlp_ratio=2", "model.puzzle_emb_ndim=16", "H_cycles=2", "L_cycles=2",
                              "arch.halt_max_steps=2", "global_batch_size=16", "epochs=2", "train.wandb=off",
                              "ray.num_workers=0", "train.eval_batch_size=8", "train.run_name=tiny",
                              f"--save_dir={runs}"], aliases=PAPER_FLAGS)
    task = PuzzleTask(resolve_config(cfg))
    torch.set_num_threads(1)
    run_dir = runs / "tiny"
    run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, 2), RunFiles(str(run_dir)))
    return run_dir


def solutions(box: tuple[int, int], count: int) -> np.ndarray:
    """Valid solution grids in token space (digit + 1)."""
    return small_sudoku_examples(count, 1, box, np.random.default_rng(0))[1].astype(np.int64) + 1


@pytest.mark.parametrize("box", [(2, 2), (2, 3), (3, 3)])
def test_symmetries_keep_solutions_valid_and_invert_exactly(box: tuple[int, int]):
    rng = np.random.default_rng(0)
    grids = solutions(box, 4)
    assert infer_box(grids) == box
    for grid in grids:
        sym = random_symmetry(box, rng)
        moved = sym.apply(grid)
        assert is_valid_grid(moved, box) and np.array_equal(sym.inverse().apply(moved), grid)
    assert not is_valid_grid(np.roll(grids[0], 1), box)


def test_a_voted_answer_is_a_valid_sudoku_when_every_answer_is():
    rng = np.random.default_rng(1)
    box = (2, 3)
    answers = solutions(box, 5)
    for _ in range(20):  # answers seen through random views and mapped back: each still valid, so is the vote
        picks = answers[rng.integers(0, len(answers), size=6)]
        views = [random_symmetry(box, rng) for _ in picks]
        mapped_back = np.stack([s.inverse().apply(s.apply(a)) for s, a in zip(views, picks, strict=True)])
        voted = vote(mapped_back, rng.normal(size=len(picks)))
        assert is_valid_grid(voted, box) and any(np.array_equal(voted, a) for a in picks)
    a, b = answers[0], answers[1]
    assert np.array_equal(vote(np.stack([a, b, b, a, a]), np.zeros(5)), a)          # most votes
    assert np.array_equal(vote(np.stack([a, b]), np.array([-1.0, 2.0])), b)         # tie: the more confident


def test_a_deeper_evaluation_changes_only_the_evaluation(trained_run: Path, sudoku_4x4: Path):
    config_before = (trained_run / "best-model" / "config.yaml").read_text()
    trained = evaluate_puzzle_run(trained_run / "best-model", batch_size=8)
    deeper = evaluate_puzzle_run(trained_run / "best-model", batch_size=8, depth={"halt_max_steps": 6})
    recursed = evaluate_puzzle_run(trained_run / "best-model", batch_size=8, depth={"h_cycles": 4, "l_cycles": 3})
    assert (trained["steps"], deeper["steps"], recursed["steps"]) == (2, 6, 2)
    assert deeper["loss"] != trained["loss"] and recursed["loss"] != trained["loss"]
    assert (trained_run / "best-model" / "config.yaml").read_text() == config_before
    head, cfg, _ = load_puzzle_model(trained_run / "best-model", str(sudoku_4x4), depth={"halt_max_steps": 6})
    assert head.model.config.halt_max_steps == 6 and cfg.model.halt_max_steps == 2
    with pytest.raises(UserError, match="--halt_max_steps: must be >= 1"):
        evaluate_puzzle_run(trained_run / "best-model", depth={"halt_max_steps": 0})


def test_hrm_ray_eval_deeper_with_voting(trained_run: Path, capsys):
    (trained_run / "config.yaml").write_text((trained_run / "best-model" / "config.yaml").read_text())
    args = ["eval", "--checkpoint", str(trained_run / "best-model"), "--batch_size", "8"]
    assert main([*args, "--halt_max_steps", "4", "--vote", "3"]) == 0
    out = capsys.readouterr().out
    assert "steps 4.00" in out and "Sudoku voting over 3 views" in out and "on 8 puzzles" in out


def test_voting_needs_a_sudoku_dataset(trained_run: Path, sudoku_4x4: Path, tmp_path: Path):
    head, _, _ = load_puzzle_model(trained_run / "best-model", str(sudoku_4x4))
    test = load_split(sudoku_4x4, "test")
    assert sudoku_vote(head, test, 1, 8)["vote_examples"] == 8
    scrambled = test.sets["all"].labels.copy()
    scrambled[:, :2] = scrambled[:, 1::-1]     # two cells of each row swapped: columns repeat digits
    test.sets["all"].labels = scrambled
    with pytest.raises(UserError, match="--vote: .* is not a Sudoku dataset"):
        sudoku_vote(head, test, 3, 8)


def test_hrm_ray_report_draws_accuracy_against_depth(trained_run: Path, tmp_path: Path):
    out = tmp_path / "depth"
    assert main(["report", str(trained_run), "--compare", str(trained_run / "best-model"), "--depths", "1,3",
                 "--vote", "2", "--max_examples", "4", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert (out / "depth.png").stat().st_size > 0
    assert report.count("| 1 |") == 2 and report.count("| 3 |") == 2 and "voted (2 views)" in report
    assert main(["report", str(trained_run), "--depths", "0,2"]) == 2
