"""Self-contained Sudoku data for the CPU demo (users have no puzzle files): random valid grids with
`blanks` cells removed, written as a one-puzzle-per-line file and built by the regular builder (which
solves every puzzle and drops those without exactly one solution).

Grids come from a randomised backtracking fill (`sudoku_grids`): every symmetry class, not the images of
one pattern grid.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hrm_ray.data.puzzles import sudoku_grids
from hrm_ray.data.puzzles.format import collate
from hrm_ray.data.puzzles.sudoku import (
    SudokuBuildConfig,
    build_split_arrays,
    build_sudoku_dataset,
    iter_grids_text,
    sudoku_metadata,
)


def random_examples(count: int, blanks: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """([count, 81] puzzles with `blanks` cells removed (0 = blank), their random valid grids), uint8.
    A puzzle may have several solutions: the dataset builder keeps only those with one."""
    if not 0 < blanks < 81:
        raise ValueError(f"blanks must be in 1..80, got {blanks}")
    rng = np.random.default_rng(seed)
    solutions = sudoku_grids.random_grids(count, (3, 3), rng)
    keep = np.argsort(rng.random((count, 81)), axis=1) >= blanks
    return np.where(keep, solutions, 0).astype(np.uint8), solutions


def random_puzzles(count: int, blanks: int, seed: int = 0) -> np.ndarray:
    """[count, 81] uint8 puzzles (0 = blank) with `blanks` cells removed from random valid grids."""
    return random_examples(count, blanks, seed)[0]


def sudoku_batch(count: int, blanks: int, seed: int = 0) -> dict:
    """A model batch of `count` generated puzzles, encoded as the Sudoku builder stores them (no solver
    check: the label is the grid the blanks were cut from)."""
    puzzles, solutions = random_examples(count, blanks, seed)
    arrays = build_split_arrays(puzzles, solutions, 0, np.random.default_rng(seed))
    return collate(arrays["inputs"], arrays["labels"], arrays["puzzle_identifiers"], sudoku_metadata(count))


# ---------------------------------------------------------------------------------------------
# Smaller Sudoku (n x n grids of box_rows x box_cols boxes, e.g. 6x6 of 2x3 boxes): the same rules and
# the same reasoning (iterated constraint propagation) on fewer cells, so a CPU learns the grid's
# geometry in minutes. Encoded as the 9x9 builder encodes: cell + 1 (0 pad, 1 blank, 2.. digits).


def _cell_units(box: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = box[0] * box[1]
    r, c = np.divmod(np.arange(n * n), n)
    return r, c, (r // box[0]) * (n // box[1]) + c // box[1]


def random_grids(count: int, box: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """[count, n*n] valid grids (digits 1..n) from every symmetry class (`sudoku_grids.random_grids`)."""
    return sudoku_grids.random_grids(count, box, rng)


def count_solutions(grid: np.ndarray, box: tuple[int, int], limit: int = 2) -> int:
    """Solutions of `grid` (0 = blank), counted up to `limit`: bitmask candidates, fewest-first search."""
    n = box[0] * box[1]
    rows, cols, boxes = (u.tolist() for u in _cell_units(box))
    cells = [int(v) for v in grid]
    used = {k: [0] * n for k in ("r", "c", "b")}
    for i, v in enumerate(cells):
        if v:
            bit = 1 << (v - 1)
            if used["r"][rows[i]] & bit or used["c"][cols[i]] & bit or used["b"][boxes[i]] & bit:
                return 0
            used["r"][rows[i]] |= bit
            used["c"][cols[i]] |= bit
            used["b"][boxes[i]] |= bit
    full = (1 << n) - 1

    def search() -> int:
        best, best_free = -1, 0
        for i, v in enumerate(cells):
            if v == 0:
                free = full & ~(used["r"][rows[i]] | used["c"][cols[i]] | used["b"][boxes[i]])
                if free == 0:
                    return 0
                if best < 0 or bin(free).count("1") < bin(best_free).count("1"):
                    best, best_free = i, free
        if best < 0:
            return 1
        found = 0
        for d in range(n):
            bit = 1 << d
            if best_free & bit:
                cells[best] = d + 1
                used["r"][rows[best]] ^= bit
                used["c"][cols[best]] ^= bit
                used["b"][boxes[best]] ^= bit
                found += search()
                used["r"][rows[best]] ^= bit
                used["c"][cols[best]] ^= bit
                used["b"][boxes[best]] ^= bit
                cells[best] = 0
                if found >= limit:
                    break
        return found

    return search()


def small_sudoku_examples(count: int, blanks: int, box: tuple[int, int], rng: np.random.Generator
                          ) -> tuple[np.ndarray, np.ndarray]:
    """`count` distinct puzzles with exactly one solution, and their solutions ([count, n*n] uint8)."""
    n = box[0] * box[1]
    if not 0 < blanks < n * n:
        raise ValueError(f"blanks must be in 1..{n * n - 1}, got {blanks}")
    puzzles, solutions, seen = [], [], set()
    while len(puzzles) < count:
        grids = random_grids(count, box, rng)
        keep = np.argsort(rng.random(grids.shape), axis=1) >= blanks
        for puzzle, solution in zip(np.where(keep, grids, 0).astype(np.uint8), grids, strict=True):
            key = puzzle.tobytes()
            if key not in seen and count_solutions(puzzle, box) == 1:
                seen.add(key)
                puzzles.append(puzzle)
                solutions.append(solution)
                if len(puzzles) == count:
                    break
    return np.stack(puzzles), np.stack(solutions)


def build_small_sudoku(output_dir: str | Path, train_size: int, test_size: int, blanks: int,
                       box: tuple[int, int], seed: int = 0, log=print, search_test_size: int = 0) -> Path:
    """train/, test/ and test_heldout_class/ (`test_size` each), and test_search/ when asked, of generated
    puzzles whose grids never repeat across splits (`sudoku_generate`; for 4x4, only the puzzles differ)."""
    from hrm_ray.data.puzzles.sudoku_generate import GeneratedSudokuConfig, build_generated_sudoku

    honest = box[0] * box[1] >= 6  # 4x4 has 288 grids and 2 classes: splits keep puzzles apart, not grids
    build_generated_sudoku(GeneratedSudokuConfig(
        output_dir=str(output_dir), box=tuple(box), train_size=train_size, test_size=test_size,
        heldout_class_size=test_size if honest else 0, search_test_size=search_test_size, blanks=blanks,
        seed=seed, distinct_grids=honest, overwrite=True), log=log)
    return Path(output_dir)


def build_demo_sudoku(output_dir: str | Path, train_size: int, test_size: int, blanks: int, seed: int = 0,
                      workers: int = 1, log=print, box: tuple[int, int] = (3, 3)) -> Path:
    """A Sudoku dataset of `train_size` + `test_size` generated puzzles (built once; reused if present).
    9x9 puzzles go through the regular builder; smaller boxes through `build_small_sudoku`."""
    output_dir = Path(output_dir)
    if (output_dir / "test" / "dataset.json").is_file() and (
            tuple(box) != (2, 3) or (output_dir / "test_heldout_class" / "dataset.json").is_file()):
        return output_dir  # (a small-box dataset without test_heldout_class is from the one-class generator)
    if tuple(box) != (3, 3):
        return build_small_sudoku(output_dir, train_size, test_size, blanks, tuple(box), seed, log)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    source = output_dir.parent / f".{output_dir.name}.puzzles.txt"
    source.write_text("\n".join(iter_grids_text(random_puzzles(train_size + test_size, blanks, seed))) + "\n")
    try:
        build_sudoku_dataset(SudokuBuildConfig(output_dir=str(output_dir), puzzles=str(source), test_size=test_size,
                                               seed=seed, workers=workers), log=log)
    finally:
        source.unlink(missing_ok=True)
    return output_dir
