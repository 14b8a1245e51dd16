"""Sudoku: exact solver with uniqueness check, augmentations, sources and the dataset builder."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from hrm_ray.cli import main as cli_main
from hrm_ray.data.puzzles.format import load_split
from hrm_ray.data.puzzles.sudoku import (
    SudokuBuildConfig,
    augment,
    build_sudoku_dataset,
    is_valid_solution,
    iter_grids_text,
    read_puzzle_lines,
    solve,
    solve_many,
    unique_solution,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def top95(real_data):
    return read_puzzle_lines(real_data / "sudoku" / "top95.txt")


@pytest.fixture(scope="module")
def top95_solved(top95):
    return solve_many(top95)


def test_solver_on_top95(top95, top95_solved):
    assert top95.shape == (95, 81)
    for p, s in zip(top95, top95_solved, strict=True):
        assert is_valid_solution(p, s)


def test_solver_on_sudoku17_slice(real_data):
    puzzles = read_puzzle_lines(real_data / "sudoku" / "sudoku17_train.txt")
    assert len(puzzles) == 300 and all((p > 0).sum() == 17 for p in puzzles[:50])  # citation line skipped
    solved = solve_many(puzzles[:300], workers=2, chunk_size=150)
    assert all(is_valid_solution(p, s) for p, s in zip(puzzles[:300], solved, strict=True))


def test_uniqueness_rejects_several_and_zero_solutions(real_data):
    puzzle = read_puzzle_lines(real_data / "sudoku" / "sudoku17_train.txt")[0]
    several = puzzle.copy()
    several[np.flatnonzero(several)[0]] = 0   # 16 clues never determine a Sudoku
    assert len(solve(several, limit=2)) == 2 and unique_solution(several) is None
    invalid = puzzle.copy()
    row = np.flatnonzero(invalid[:9] == 0)
    invalid[row[0]], invalid[row[1]] = 5, 5   # the same digit twice in row 0
    assert solve(invalid) == [] and unique_solution(invalid) is None
    one_blank = unique_solution(puzzle).copy()
    one_blank[0] = 0
    assert unique_solution(one_blank) is not None
    with pytest.raises(ValueError, match="81 cells"):
        solve(np.zeros(80, dtype=np.uint8))


def test_augmentations_are_valid_sudokus(top95, top95_solved):
    rng = np.random.default_rng(0)
    reps = np.repeat(np.arange(95), 3)
    aug_p, aug_s = augment(top95[reps], top95_solved[reps], rng)
    assert not np.array_equal(aug_p, top95[reps])
    for p, s, orig in zip(aug_p, aug_s, top95[reps], strict=True):
        assert is_valid_solution(p, s)
        assert (p > 0).sum() == (orig > 0).sum()
    for p, s in zip(aug_p[:40], aug_s[:40], strict=True):   # the solver agrees: still a proper puzzle
        assert np.array_equal(unique_solution(p), s)


def test_puzzle_line_parsing(tmp_path):
    f = tmp_path / "p.txt"
    good = "".join(iter_grids_text([np.zeros(81, np.uint8)]))
    f.write_text(f"A citation line, 2005\n# comment\n\n{good}\n{good.replace('0', '.')}\n")
    assert read_puzzle_lines(f).shape == (2, 81)
    f.write_text(f"{good}\n{good[:80]}\n")
    with pytest.raises(ValueError, match=r"p.txt:2: a puzzle line needs 81 cells, got 80"):
        read_puzzle_lines(f)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_puzzle_lines(tmp_path / "missing.txt")


def _write_csv(path, puzzles, solutions):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "question", "answer", "rating"])
        for i, (p, s) in enumerate(zip(puzzles, solutions, strict=True)):
            q = "".join(iter_grids_text([p])).replace("0", ".")
            w.writerow(["top95", q, "".join(iter_grids_text([s])), i % 5])


def test_build_from_paper_csv(tmp_path, top95, top95_solved):
    _write_csv(tmp_path / "train.csv", top95[:60], top95_solved[:60])
    bad = top95_solved[60:70].copy()
    bad[0, :2] = bad[0, 1::-1]    # a wrong answer is dropped
    _write_csv(tmp_path / "test.csv", top95[60:70], bad)
    out = tmp_path / "ds"
    counts = build_sudoku_dataset(SudokuBuildConfig(
        output_dir=str(out), source_csv=str(tmp_path / "train.csv"), test_csv=str(tmp_path / "test.csv"),
        subsample_size=50, num_aug=3, seed=1), log=lambda *_: None)
    assert counts == {"train": 200, "test": 9}
    train = load_split(out, "train")
    meta = train.metadata
    assert (meta.vocab_size, meta.seq_len, meta.pad_id, meta.ignore_label_id, meta.total_groups) == (11, 81, 0, 0, 50)
    s = train.sets["all"]
    assert isinstance(s.inputs, np.memmap)
    assert s.group_indices.tolist() == list(range(0, 201, 4)) and s.num_puzzles == 200
    assert s.inputs.min() >= 1 and s.inputs.max() <= 10 and s.labels.min() >= 2
    for x, y in zip(s.inputs[:12], s.labels[:12], strict=True):
        assert is_valid_solution(np.asarray(x) - 1, np.asarray(y) - 1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temporary directory left


def test_build_from_puzzle_file_and_cli(tmp_path, real_data, capsys):
    src = tmp_path / "p.txt"
    lines = list(iter_grids_text(read_puzzle_lines(real_data / "sudoku" / "sudoku17_train.txt")[:30]))
    several = lines[0][:-1] + "0" if lines[0][-1] != "0" else "0" * 81
    src.write_text("\n".join(["# header", *lines, several, "11" + "0" * 79]) + "\n")
    out = tmp_path / "ds"
    argv = ["puzzle-data", "sudoku", "--puzzles", str(src), "--output-dir", str(out), "--test-size", "5", "--workers", "1"]
    assert cli_main(argv) == 0
    assert "dropped" in capsys.readouterr().out
    train, test = load_split(out, "train"), load_split(out, "test")
    assert train.sets["all"].num_examples + test.sets["all"].num_examples == 30
    assert cli_main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli_main(["puzzle-data", "sudoku", "--puzzles", str(src), "--output-dir", str(tmp_path / "x"),
                     "--num-aug", "-1"]) == 2
    assert not (tmp_path / "x").exists()


def _valid(grid: np.ndarray, box: tuple[int, int]) -> bool:
    from hrm_ray.data.puzzles.demo import _cell_units

    n = box[0] * box[1]
    return all(sorted(grid[unit == k].tolist()) == list(range(1, n + 1))
               for unit in _cell_units(box) for k in range(n))


def test_small_sudoku_grids_puzzles_and_dataset(tmp_path):
    from hrm_ray.data.puzzles.demo import (
        build_demo_sudoku,
        count_solutions,
        random_grids,
        small_sudoku_examples,
    )

    box = (2, 3)
    grids = random_grids(50, box, np.random.default_rng(0))
    assert all(_valid(g, box) for g in grids) and len({g.tobytes() for g in grids}) > 40
    assert count_solutions(grids[0], box) == 1
    assert count_solutions(np.zeros(36, dtype=np.uint8), box) == 2            # counting stops at the limit
    clash = grids[0].copy()
    clash[1] = clash[0]
    assert count_solutions(clash, box) == 0
    puzzles, solutions = small_sudoku_examples(40, 16, box, np.random.default_rng(1))
    assert (puzzles == 0).sum(1).tolist() == [16] * 40 and len({p.tobytes() for p in puzzles}) == 40
    assert all(_valid(s, box) and count_solutions(p, box) == 1 for p, s in zip(puzzles, solutions, strict=True))
    assert ((puzzles == solutions) | (puzzles == 0)).all()

    out = build_demo_sudoku(tmp_path / "six", 30, 10, 16, seed=2, box=box, log=lambda _: None)
    train, test = load_split(out, "train"), load_split(out, "test")
    assert (train.metadata.vocab_size, train.metadata.seq_len, test.metadata.total_groups) == (8, 36, 10)
    inputs = {row.tobytes() for row in np.asarray(train.sets["all"].inputs)}
    assert len(inputs) == 30 and not inputs & {row.tobytes() for row in np.asarray(test.sets["all"].inputs)}
    labels = np.asarray(test.sets["all"].labels)
    assert labels.min() == 2 and labels.max() == 7 and all(_valid(row - 1, box) for row in labels)
