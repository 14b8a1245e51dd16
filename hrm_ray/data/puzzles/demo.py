"""Self-contained Sudoku data for the CPU demo (users have no puzzle files): random valid grids with
`blanks` cells removed, written as a one-puzzle-per-line file and built by the regular builder (which
solves every puzzle and drops those without exactly one solution).

Grids come from the canonical pattern grid through the validity-preserving augmentations (digit
relabelling, transpose, band/row and stack/column permutations): 9! x 2 x 6^8 distinct grids.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, augment, build_sudoku_dataset, iter_grids_text


def random_puzzles(count: int, blanks: int, seed: int = 0) -> np.ndarray:
    """[count, 81] uint8 puzzles (0 = blank) with `blanks` cells removed from random valid grids."""
    if not 0 < blanks < 81:
        raise ValueError(f"blanks must be in 1..80, got {blanks}")
    rng = np.random.default_rng(seed)
    r, c = np.divmod(np.arange(81), 9)
    base = ((r * 3 + r // 3 + c) % 9 + 1).astype(np.uint8)
    grids = np.repeat(base[None], count, axis=0)
    _, solutions = augment(grids, grids, rng)
    keep = np.argsort(rng.random((count, 81)), axis=1) >= blanks
    return np.where(keep, solutions, 0).astype(np.uint8)


def build_demo_sudoku(output_dir: str | Path, train_size: int, test_size: int, blanks: int, seed: int = 0,
                      workers: int = 1, log=print) -> Path:
    """A Sudoku dataset of `train_size` + `test_size` generated puzzles (built once; reused if present)."""
    output_dir = Path(output_dir)
    if (output_dir / "test" / "dataset.json").is_file():
        return output_dir
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    source = output_dir.parent / f".{output_dir.name}.puzzles.txt"
    source.write_text("\n".join(iter_grids_text(random_puzzles(train_size + test_size, blanks, seed))) + "\n")
    try:
        build_sudoku_dataset(SudokuBuildConfig(output_dir=str(output_dir), puzzles=str(source), test_size=test_size,
                                               seed=seed, workers=workers), log=log)
    finally:
        source.unlink(missing_ok=True)
    return output_dir
