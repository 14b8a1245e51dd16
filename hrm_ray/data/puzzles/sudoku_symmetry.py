"""Symmetries of an n x n Sudoku with r x c boxes, in the token space of the puzzle datasets (token =
digit + 1: 0 padding, 1 blank, 2..n+1 the digits): digit relabelling, permutations of the bands (groups
of r rows) and of the rows inside each, of the stacks (groups of c columns) and of the columns inside
each, and, for square boxes only, transposition. Each maps valid solutions to valid solutions and has
an exact inverse, which is what voting over augmented views of one puzzle needs (hrm_ray.infer.sudoku_vote).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SudokuSymmetry:
    cells: np.ndarray   # [n*n] output cell i takes input cell cells[i]
    tokens: np.ndarray  # [n+2] token relabelling (0 and 1 fixed)

    def apply(self, grids: np.ndarray) -> np.ndarray:
        """[..., n*n] token grids -> the same grids transformed."""
        return self.tokens[np.asarray(grids)[..., self.cells]]

    def inverse(self) -> SudokuSymmetry:
        return SudokuSymmetry(np.argsort(self.cells), np.argsort(self.tokens))


def identity(n: int) -> SudokuSymmetry:
    return SudokuSymmetry(np.arange(n * n), np.arange(n + 2))


def _line_permutation(rng: np.random.Generator, groups: int, size: int) -> np.ndarray:
    """A permutation of groups x size lines that shuffles the groups and the lines inside each."""
    order = rng.permutation(groups)
    return np.concatenate([g * size + rng.permutation(size) for g in order])


def random_symmetry(box: tuple[int, int], rng: np.random.Generator) -> SudokuSymmetry:
    """One random symmetry of the n x n grid with `box` = (rows, cols) boxes."""
    r, c = box
    n = r * c
    rows = _line_permutation(rng, c, r)       # c bands of r rows
    cols = _line_permutation(rng, r, c)       # r stacks of c columns
    cells = rows[:, None] * n + cols[None, :]
    if r == c and rng.random() < 0.5:
        cells = cells.T
    tokens = np.concatenate([[0, 1], rng.permutation(n) + 2])
    return SudokuSymmetry(cells.reshape(-1), tokens)


def is_valid_grid(grid: np.ndarray, box: tuple[int, int]) -> bool:
    """A complete grid of tokens whose rows, columns and boxes each hold every digit once."""
    r, c = box
    n = r * c
    g = np.asarray(grid).reshape(n, n).astype(np.int64) - 2
    if g.min() < 0 or g.max() >= n:
        return False
    boxes = g.reshape(c, r, r, c).transpose(0, 2, 1, 3).reshape(n, n)
    return all(len(set(units[i])) == n for units in (g, g.T, boxes) for i in range(n))


def infer_box(solutions: np.ndarray) -> tuple[int, int] | None:
    """The box shape (rows, cols) every solution grid [N, n*n] obeys, or None (not Sudoku solutions)."""
    n = math.isqrt(solutions.shape[-1])
    if n * n != solutions.shape[-1] or n < 2:
        return None
    for r in sorted(range(2, n), key=lambda r: abs(r - n / r)):  # 1 x n boxes would be Latin squares
        if n % r == 0 and all(is_valid_grid(s, (r, n // r)) for s in solutions):
            return r, n // r
    return None
