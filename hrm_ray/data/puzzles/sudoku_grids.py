"""Solution grids from every symmetry class, and the class a grid belongs to.

A grid is a flat uint8 array [n*n] of digits 1..n for an n x n Sudoku of r x c boxes (r rows, c columns).

Generation: a randomised backtracking fill (each step fills the open cell with the fewest candidates, ties
broken at random, and tries its candidates in random order), then a uniformly random element of the
symmetry group (below) is applied. Every valid grid can come out, so every symmetry class is reachable, and
grids of one class are equally likely (the group action makes the distribution invariant), but the class
probabilities follow the fill and are not exactly proportional to class size: the distribution is uniform
within each class, close to but not exactly uniform over all valid grids.

Symmetry group: digit relabelling; permutations of the bands (groups of r rows), of the rows inside each
band, of the stacks (groups of c columns) and of the columns inside each stack; transposition only for
square boxes (with 2 x 3 boxes a transposed grid has 3 x 2 boxes, so it is not a symmetry there).

`canonical_key` names a grid's class: for boxes of up to 6 cells (6x6 and smaller) it is the exact
canonical form (the lexicographically smallest image under the group, digits relabelled so the first
row reads 1..n); for 9x9 (3.4M cell permutations times 9!) it is an invariant of the class (equal for
every image of a grid; two classes may in principle share it, which only makes dedupe stricter).
"""
from __future__ import annotations

import hashlib
import itertools
from functools import cache

import numpy as np

Box = tuple[int, int]


def _units(box: Box) -> tuple[list[list[int]], list[list[int]]]:
    """(units as cell lists, for each cell its peers)."""
    r, c = box
    n = r * c
    rows = [[i * n + j for j in range(n)] for i in range(n)]
    cols = [[i * n + j for i in range(n)] for j in range(n)]
    boxes = [[(br + i) * n + bc + j for i in range(r) for j in range(c)]
             for br in range(0, n, r) for bc in range(0, n, c)]
    units = rows + cols + boxes
    peers = [sorted({p for u in units if cell in u for p in u} - {cell}) for cell in range(n * n)]
    return units, peers


@cache
def unit_tables(box: Box) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...],
                                    tuple[tuple[tuple[int, ...], ...], ...]]:
    """(units, peers of each cell, units of each cell) as tuples, cached per box shape."""
    units, peers = _units(box)
    cell_units = tuple(tuple(tuple(u) for u in units if cell in u) for cell in range(len(peers)))
    return tuple(tuple(u) for u in units), tuple(tuple(p) for p in peers), cell_units


def _fill(box: Box, rng: np.random.Generator) -> list[int] | None:
    """One randomised backtracking fill of an empty grid (fewest-candidates cell first, random ties and
    digit order); None when an unlucky fill runs out of its node budget (the caller starts again)."""
    r, c = box
    n = r * c
    full = (1 << n) - 1
    unit = [(i // n, n + i % n, 2 * n + (i // n) // r * (n // c) + (i % n) // c) for i in range(n * n)]
    used = [0] * (3 * n)
    grid = [0] * (n * n)
    budget = [20_000]
    popcount = [bin(m).count("1") for m in range(full + 1)]

    def step() -> bool:
        budget[0] -= 1
        if budget[0] < 0:
            return False
        best, best_mask, best_count, ties = -1, 0, n + 1, 0
        for i in range(n * n):
            if grid[i]:
                continue
            a, b, k = unit[i]
            mask = full & ~(used[a] | used[b] | used[k])
            count = popcount[mask]
            if count == 0:
                return False
            if count < best_count:
                best, best_mask, best_count, ties = i, mask, count, 1
            elif count == best_count:
                ties += 1
                if rng.random() * ties < 1:  # reservoir choice: a uniform tie among the fewest
                    best, best_mask = i, mask
        if best < 0:
            return True
        a, b, k = unit[best]
        for d in rng.permutation([d for d in range(n) if best_mask >> d & 1]).tolist():
            bit = 1 << d
            grid[best] = d + 1
            used[a] |= bit
            used[b] |= bit
            used[k] |= bit
            if step():
                return True
            used[a] &= ~bit
            used[b] &= ~bit
            used[k] &= ~bit
        grid[best] = 0
        return False

    return grid if step() else None


def random_symmetry_cells(box: Box, rng: np.random.Generator) -> np.ndarray:
    """[n*n] cell permutation: random band, row-in-band, stack, column-in-stack order (+ transpose if square)."""
    r, c = box
    n = r * c
    rows = np.concatenate([b * r + rng.permutation(r) for b in rng.permutation(c)])
    cols = np.concatenate([s * c + rng.permutation(c) for s in rng.permutation(r)])
    cells = rows[:, None] * n + cols[None, :]
    if r == c and rng.random() < 0.5:
        cells = cells.T
    return cells.reshape(-1)


def random_grids(count: int, box: Box, rng: np.random.Generator) -> np.ndarray:
    """[count, n*n] uint8 valid grids from every symmetry class (see the module docstring)."""
    n = box[0] * box[1]
    out = np.empty((count, n * n), dtype=np.uint8)
    k = 0
    while k < count:
        grid = _fill(box, rng)
        if grid is None:
            continue
        relabel = np.concatenate([[0], rng.permutation(n) + 1]).astype(np.uint8)
        out[k] = relabel[np.asarray(grid, dtype=np.uint8)[random_symmetry_cells(box, rng)]]
        k += 1
    return out


# ---------------------------------------------------------------------------------------------
# Classes.

def _line_orders(groups: int, size: int) -> list[list[int]]:
    """Every order of groups x size lines that permutes the groups and the lines inside each."""
    inner = list(itertools.permutations(range(size)))
    return [[g * size + i for g, pick in zip(outer, picks, strict=True) for i in pick]
            for outer in itertools.permutations(range(groups))
            for picks in itertools.product(inner, repeat=groups)]


@cache
def _cell_permutations(box: Box) -> np.ndarray:
    """Every cell permutation of the group for small boxes: [G, n*n] (G = 3,456 for 2 x 3 boxes)."""
    r, c = box
    n = r * c
    rows, cols = np.asarray(_line_orders(c, r)), np.asarray(_line_orders(r, c))
    perms = (rows[:, None, :, None] * n + cols[None, :, None, :]).reshape(-1, n, n)
    if r == c:
        perms = np.concatenate([perms, perms.transpose(0, 2, 1)])
    return perms.reshape(len(perms), n * n)


def exact_canonical(grid: np.ndarray, box: Box) -> bytes:
    """The smallest image of `grid` under the group, its first row relabelled to 1..n (small boxes only)."""
    n = box[0] * box[1]
    images = np.asarray(grid, dtype=np.uint8)[_cell_permutations(box)]          # [G, n*n]
    relabel = np.zeros((len(images), n + 1), dtype=np.uint8)
    np.put_along_axis(relabel, images[:, :n].astype(np.int64), np.arange(1, n + 1, dtype=np.uint8)[None], axis=1)
    images = np.take_along_axis(relabel, images.astype(np.int64), axis=1)
    order = np.lexsort(images.T[::-1])
    return images[order[0]].tobytes()


def _cycle_type(a: np.ndarray, b: np.ndarray) -> tuple[int, ...]:
    """Cycle lengths of the digit permutation taking line a to line b (invariant under relabelling)."""
    perm = np.zeros(len(a) + 1, dtype=np.int64)
    perm[a] = b
    seen, lengths = set(), []
    for start in a.tolist():
        if start in seen:
            continue
        length, d = 0, start
        while d not in seen:
            seen.add(d)
            d = int(perm[d])
            length += 1
        lengths.append(length)
    return tuple(sorted(lengths))


def _lines_signature(lines: np.ndarray, group: int) -> tuple:
    """Invariant of the rows (or columns) under relabelling, reordering of lines within and across
    groups, and any permutation of the positions along them."""
    count = len(lines)
    band_of = [i // group for i in range(count)]
    per_line = []
    for i in range(count):
        inside = sorted(_cycle_type(lines[i], lines[j]) for j in range(count) if j != i and band_of[j] == band_of[i])
        across = sorted(_cycle_type(lines[i], lines[j]) for j in range(count) if band_of[j] != band_of[i])
        per_line.append((tuple(inside), tuple(across)))
    bands = sorted(tuple(sorted(per_line[b * group:(b + 1) * group])) for b in range(count // group))
    return tuple(bands)


def class_invariant(grid: np.ndarray, box: Box) -> bytes:
    """A fingerprint equal for every image of `grid` under the group (the 9x9 class key)."""
    r, c = box
    n = r * c
    g = np.asarray(grid, dtype=np.int64).reshape(n, n)
    rows, cols = _lines_signature(g, r), _lines_signature(g.T, c)
    parts = sorted([repr(rows), repr(cols)]) if r == c else [repr(rows), repr(cols)]
    return hashlib.sha1("|".join(parts).encode()).digest()


def canonical_key(grid: np.ndarray, box: Box) -> bytes:
    """The key of a grid's symmetry class (exact for up to 6 x 6 grids, an invariant for 9 x 9)."""
    n = box[0] * box[1]
    return exact_canonical(grid, box) if n <= 6 else class_invariant(grid, box)


def class_bucket(key: bytes, buckets: int) -> int:
    """A stable bucket 0..buckets-1 of a class key (for holding classes out of training)."""
    return int.from_bytes(hashlib.sha1(key).digest()[:8], "big") % buckets
