"""How hard a Sudoku is, by the propagation it needs: a solver that only applies singles.

- `naked_singles`: filling every cell that has one candidate left, round after round, solves it.
- `hidden_singles`: naked singles plus placing a digit where a unit (row, column, box) has one cell left for
  it solves it.
- `search`: singles stall with blanks left; solving needs more (pairs, chains, trial and error).

Grids are flat arrays [n*n] (0 = blank) of an n x n Sudoku with r x c boxes. A puzzle is classified as
given: call it on puzzles with exactly one solution (the builders check that first).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from hrm_ray.data.puzzles.sudoku_grids import Box, unit_tables

CLASSES = ("naked_singles", "hidden_singles", "search")


def _propagate(cells: list[int], box: Box, hidden: bool) -> bool:
    """Apply singles to `cells` in place until nothing changes; True when the grid is full."""
    n = box[0] * box[1]
    units, peers, _ = unit_tables(box)
    full = (1 << n) - 1
    while True:
        cand = [0] * (n * n)
        for i, v in enumerate(cells):
            if v == 0:
                used = 0
                for p in peers[i]:
                    if cells[p]:
                        used |= 1 << (cells[p] - 1)
                cand[i] = full & ~used
                if cand[i] == 0:
                    return False  # contradiction: not a proper puzzle, singles cannot finish it
        placed = {i: m.bit_length() for i, m in enumerate(cand) if m and not m & (m - 1)}
        if hidden and not placed:
            for unit in units:
                for d in range(n):
                    spots = [i for i in unit if cand[i] >> d & 1]
                    if len(spots) == 1:
                        placed[spots[0]] = d + 1
        if not placed:
            return all(cells)
        for i, digit in placed.items():
            cells[i] = digit


def classify(puzzle: np.ndarray | Iterable[int], box: Box) -> str:
    """`naked_singles`, `hidden_singles` or `search` (see the module docstring)."""
    cells = [int(v) for v in np.asarray(puzzle).reshape(-1)]
    if _propagate(cells[:], box, hidden=False):
        return "naked_singles"
    if _propagate(cells, box, hidden=True):
        return "hidden_singles"
    return "search"


def _classify_chunk(args: tuple[np.ndarray, Box]) -> list[str]:
    puzzles, box = args
    return [classify(p, box) for p in puzzles]


def classify_many(puzzles: np.ndarray, box: Box, workers: int = 1, chunk_size: int = 1000) -> np.ndarray:
    """Class names of [N, n*n] puzzles (an object array), in `workers` processes when there are many."""
    chunks = [(puzzles[s:s + chunk_size], tuple(box)) for s in range(0, len(puzzles), chunk_size)]
    if workers <= 1 or len(chunks) <= 1:
        results = [_classify_chunk(ch) for ch in chunks]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_classify_chunk, chunks))
    return np.array([c for chunk in results for c in chunk], dtype=object)


def check_difficulty(name: str | None) -> str | None:
    if name is not None and name not in CLASSES:
        raise ValueError(f"--difficulty must be one of {', '.join(CLASSES)}, got {name!r}")
    return name


def mix(classes: Iterable[str]) -> dict[str, int]:
    """Counts per class, every class named (0 where absent)."""
    counts = Counter(classes)
    return {c: int(counts.get(c, 0)) for c in CLASSES}


def mix_text(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{c} {k} ({100 * k / total:.1f}%)" for c, k in counts.items())
