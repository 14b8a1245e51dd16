"""Generated Sudoku: grids of every symmetry class, difficulty classes, honest splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrm_ray.data.puzzles.demo import count_solutions
from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset, read_puzzle_lines, solve
from hrm_ray.data.puzzles.sudoku_difficulty import classify
from hrm_ray.data.puzzles.sudoku_generate import (
    GeneratedSudokuConfig,
    build_generated_sudoku,
    heldout_class,
    relabel_key,
)
from hrm_ray.data.puzzles.sudoku_grids import (
    canonical_key,
    exact_canonical,
    random_grids,
    random_symmetry_cells,
)
from hrm_ray.data.puzzles.sudoku_symmetry import is_valid_grid

DATA = Path(__file__).parent / "data" / "sudoku"


def _image(grid: np.ndarray, box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    n = box[0] * box[1]
    relabel = np.concatenate([[0], rng.permutation(n) + 1]).astype(np.uint8)
    return relabel[grid[random_symmetry_cells(box, rng)]]


def test_generator_covers_many_classes_and_grids_are_valid():
    grids = random_grids(200, (2, 3), np.random.default_rng(0))
    assert all(is_valid_grid(g + 1, (2, 3)) for g in grids)
    classes = {exact_canonical(g, (2, 3)) for g in grids}
    assert len(classes) >= 20  # the old pattern-grid generator gave exactly 1
    nine = random_grids(5, (3, 3), np.random.default_rng(0))
    assert all(is_valid_grid(g + 1, (3, 3)) for g in nine)


@pytest.mark.parametrize("box", [(2, 3), (3, 3)])
def test_class_key_is_the_same_for_every_symmetry_image(box):
    rng = np.random.default_rng(1)
    grid = random_grids(1, box, rng)[0]
    images = [_image(grid, box, rng) for _ in range(4)]
    assert all(is_valid_grid(im + 1, box) for im in images)
    assert {canonical_key(im, box) for im in images} == {canonical_key(grid, box)}
    other = random_grids(1, box, np.random.default_rng(7))[0]
    assert canonical_key(other, box) != canonical_key(grid, box)


def test_difficulty_classes_on_hand_checked_puzzles():
    top95 = read_puzzle_lines(DATA / "top95.txt")
    assert all(classify(p, (3, 3)) == "search" for p in top95[:5])  # Norvig's hard set: singles stall
    one_blank = solve(top95[0])[0].copy()
    one_blank[40] = 0
    assert classify(one_blank, (3, 3)) == "naked_singles"


def test_hidden_single_needed():
    # 6x6, 2x3 boxes (checked by hand): no cell starts with a single candidate, but the box of rows 2-3 and
    # columns 3-5 has one place for a 1: row 3 and columns 3 and 4 already hold a 1, leaving (2, 5).
    puzzle = np.array([int(ch) for ch in "000010002005050000100003500100000040"], dtype=np.uint8)
    grid = puzzle.reshape(6, 6)
    for r in range(6):
        for c in range(6):
            if grid[r, c] == 0:
                box = grid[r // 2 * 2:r // 2 * 2 + 2, c // 3 * 3:c // 3 * 3 + 3]
                seen = set(grid[r]) | set(grid[:, c]) | set(box.reshape(-1))
                assert len(set(range(1, 7)) - seen) > 1
    assert classify(puzzle, (2, 3)) == "hidden_singles"
    assert count_solutions(puzzle, (2, 3)) == 1


def test_generated_splits_are_honest(tmp_path):
    cfg = GeneratedSudokuConfig(output_dir=str(tmp_path / "ds"), box=(2, 3), train_size=60, test_size=20,
                                heldout_class_size=20, search_test_size=2, blanks=20, seed=0)
    mixes = build_generated_sudoku(cfg, log=lambda _: None)
    labels = {}
    for split in ("train", "test", "test_heldout_class", "test_search"):
        meta = json.loads((tmp_path / "ds" / split / "dataset.json").read_text())
        assert meta["difficulty"] == mixes[split]
        labels[split] = np.load(tmp_path / "ds" / split / "all__labels.npy").astype(np.uint8) - 1
    assert mixes["test_search"] == {"naked_singles": 0, "hidden_singles": 0, "search": 2}
    train_keys = {relabel_key(g) for g in labels["train"]}
    for split in ("test", "test_heldout_class", "test_search"):
        assert not train_keys & {relabel_key(g) for g in labels[split]}
    train_classes = {exact_canonical(g, (2, 3)) for g in labels["train"]}
    held = {exact_canonical(g, (2, 3)) for g in labels["test_heldout_class"]}
    assert held and not held & train_classes
    assert all(heldout_class(g, (2, 3)) for g in labels["test_heldout_class"])
    inputs = np.load(tmp_path / "ds" / "test_search" / "all__inputs.npy").astype(np.uint8) - 1
    assert all(classify(p, (2, 3)) == "search" for p in inputs)


def test_file_builder_records_difficulty_and_keeps_one_class(tmp_path):
    lines = (DATA / "top95.txt").read_text().splitlines()
    puzzles = [ln for ln in lines if len(ln.strip()) == 81][:24]
    easy = random_grids(1, (3, 3), np.random.default_rng(2))[0]  # a grid of its own (dedupe keeps it)
    easy[:5] = 0
    src = tmp_path / "mixed.txt"
    src.write_text("\n".join(puzzles + ["".join(map(str, easy))]) + "\n")
    logs: list[str] = []
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(tmp_path / "all"), puzzles=str(src), test_size=5,
                                           seed=0, workers=1), log=logs.append)
    metas = [json.loads((tmp_path / "all" / s / "dataset.json").read_text())["difficulty"] for s in ("train", "test")]
    assert sum(m["search"] for m in metas) == 24 and sum(m["naked_singles"] for m in metas) == 1
    assert any("search" in line for line in logs)
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(tmp_path / "hard"), puzzles=str(src), test_size=5,
                                           seed=0, workers=1, difficulty="search"), log=lambda _: None)
    train = json.loads((tmp_path / "hard" / "train" / "dataset.json").read_text())
    assert train["difficulty"]["naked_singles"] == 0 and train["difficulty_filter"] == "search"


def test_file_builder_drops_training_grids_shared_with_test(tmp_path):
    top = read_puzzle_lines(DATA / "top95.txt")[:10]
    rng = np.random.default_rng(0)
    solution = solve(top[0])[0]
    image = _image(solution, (3, 3), rng)
    puzzle_a = np.where(rng.random(81) < 0.3, 0, solution)
    puzzle_b = np.where(rng.random(81) < 0.3, 0, image)
    src = tmp_path / "p.txt"
    rows = [puzzle_a, puzzle_b] + list(top[1:])
    src.write_text("\n".join("".join(map(str, r.tolist())) for r in rows) + "\n")
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(tmp_path / "d"), puzzles=str(src), test_size=5,
                                           seed=0, workers=1), log=lambda _: None)
    keys = {}
    for split in ("train", "test"):
        labels = np.load(tmp_path / "d" / split / "all__labels.npy").astype(np.uint8) - 1
        keys[split] = {canonical_key(g, (3, 3)) for g in labels}
    assert not keys["train"] & keys["test"]


def test_cli_rejects_bad_blanks(tmp_path, capsys):
    from hrm_ray.cli import main

    rc = main(["puzzle-data", "sudoku", "--generate", "6x6", "--output-dir", str(tmp_path / "x"), "--blanks", "lots"])
    assert rc != 0 and "--blanks must be a number or 'max'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_ray_data_generation_is_deterministic(ray_session):
    from hrm_ray.data.puzzles.sudoku_generate import _draw_batch, draw_ray

    batch = {"id": np.array([4])}
    one, two = (_draw_batch(batch, (2, 3), 20, 3, 3, None, None) for _ in range(2))
    assert np.array_equal(one["puzzle"], two["puzzle"])  # a task's output depends on (seed, task id) only
    drawn = draw_ray(6, (2, 3), 20, seed=3, per_task=3)
    assert len(drawn) == 6 and len({relabel_key(g) for g in drawn.solutions}) == 6
    assert all(count_solutions(p, (2, 3)) == 1 and (p == 0).sum() == 20 for p in drawn.puzzles)


def test_lm_sudoku_task_keeps_grids_and_held_out_classes_apart():
    from hrm_ray.data.reasoning_tasks import SUDOKU_BOX, sudoku_extra_tests, task_pairs

    def grid(text: str) -> np.ndarray:
        return np.frombuffer(text.replace("/", "").encode(), dtype=np.uint8) - ord("0")

    pairs = task_pairs("sudoku6", {"train": 40, "test": 10}, seed=1)
    train = [grid(r) for _, r in pairs["train"]]
    assert not {relabel_key(g) for g in train} & {relabel_key(grid(r)) for _, r in pairs["test"]}
    assert not any(heldout_class(g, SUDOKU_BOX) for g in train)
    assert len({exact_canonical(g, SUDOKU_BOX) for g in train}) > 5  # many classes, not one
    extra = sudoku_extra_tests(3, 1, seed=0)
    assert all(heldout_class(grid(r), SUDOKU_BOX) for pairs in extra.values() for _, r in pairs)
    search = extra["test_search"][0][0].replace("/", "").replace(".", "0")
    assert classify(np.array([int(c) for c in search], dtype=np.uint8), SUDOKU_BOX) == "search"
