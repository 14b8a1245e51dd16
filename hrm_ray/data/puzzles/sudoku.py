"""Sudoku: an exact solver, puzzle sources, validity-preserving augmentations, and the dataset builder.

Grids are numpy uint8 arrays [9, 9] (or flat [81]) with 0 = blank. The dataset stores cell + 1
(vocab 11: 0 = pad, 1 = blank, 2..10 = digits 1..9) as the paper does.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm_ray.data.puzzles.format import paper_csv_rows

# ---------------------------------------------------------------------------------------------
# Solver: bitmask candidates, constraint propagation (naked + hidden singles), MRV backtracking.

_ALL = 0x1FF
_UNITS: tuple[tuple[int, ...], ...] = tuple(
    [tuple(r * 9 + c for c in range(9)) for r in range(9)]
    + [tuple(r * 9 + c for r in range(9)) for c in range(9)]
    + [tuple((br + i) * 9 + bc + j for i in range(3) for j in range(3))
       for br in (0, 3, 6) for bc in (0, 3, 6)]
)
_CELL_UNITS: tuple[tuple[tuple[int, ...], ...], ...] = tuple(
    tuple(u for u in _UNITS if i in u) for i in range(81))
_PEERS: tuple[tuple[int, ...], ...] = tuple(
    tuple(sorted({j for u in _CELL_UNITS[i] for j in u} - {i})) for i in range(81))
_POPCOUNT = tuple(bin(m).count("1") for m in range(512))
_BITS = tuple(tuple(1 << d for d in range(9) if m >> d & 1) for m in range(512))
_DIGIT = {1 << d: d + 1 for d in range(9)}


def _eliminate(c: list[int], i: int, bit: int) -> bool:
    """Remove candidate `bit` from cell i and propagate; False on contradiction."""
    v = c[i]
    if not v & bit:
        return True
    v &= ~bit
    c[i] = v
    if not v:
        return False
    if not v & (v - 1):
        for p in _PEERS[i]:
            if c[p] & v and not _eliminate(c, p, v):
                return False
    for unit in _CELL_UNITS[i]:
        place = -1
        for j in unit:
            if c[j] & bit:
                if place >= 0:
                    break
                place = j
        else:
            if place < 0:
                return False
            if c[place] != bit and not _assign(c, place, bit):
                return False
    return True


def _assign(c: list[int], i: int, bit: int) -> bool:
    for other in _BITS[c[i] & ~bit]:
        if not _eliminate(c, i, other):
            return False
    return True


def _search(c: list[int], limit: int, found: list[list[int]]) -> None:
    best, best_n = -1, 10
    for i in range(81):
        n = _POPCOUNT[c[i]]
        if 1 < n < best_n:
            best, best_n = i, n
            if n == 2:
                break
    if best < 0:
        found.append(c)
        return
    for bit in _BITS[c[best]]:
        child = c[:]
        if _assign(child, best, bit):
            _search(child, limit, found)
            if len(found) >= limit:
                return


def solve(grid: Sequence[int] | np.ndarray, limit: int = 2) -> list[np.ndarray]:
    """Up to `limit` solutions of an 81-cell grid (0 = blank), each a uint8 array [81].

    limit=2 is the uniqueness test: one solution means the puzzle is proper.
    """
    cells = [int(v) for v in np.asarray(grid).reshape(-1)]
    if len(cells) != 81 or any(v < 0 or v > 9 for v in cells):
        raise ValueError("a Sudoku grid has 81 cells with values 0..9")
    c = [_ALL] * 81
    for i, v in enumerate(cells):
        if v and (not c[i] & (1 << (v - 1)) or not _assign(c, i, 1 << (v - 1))):
            return []
    found: list[list[int]] = []
    _search(c, limit, found)
    return [np.array([_DIGIT[m] for m in sol], dtype=np.uint8) for sol in found]


def unique_solution(grid: Sequence[int] | np.ndarray) -> np.ndarray | None:
    """The solution if the puzzle has exactly one, else None."""
    sols = solve(grid, limit=2)
    return sols[0] if len(sols) == 1 else None


def _unique_solutions_chunk(puzzles: np.ndarray) -> np.ndarray:
    out = np.zeros_like(puzzles)
    for k, p in enumerate(puzzles):
        sol = unique_solution(p)
        if sol is not None:
            out[k] = sol
    return out


def solve_many(puzzles: np.ndarray, workers: int = 1, chunk_size: int = 500) -> np.ndarray:
    """Unique solutions of [N, 81] puzzles; rows of zeros where a puzzle has none or several."""
    puzzles = np.ascontiguousarray(puzzles.reshape(-1, 81), dtype=np.uint8)
    chunks = [puzzles[s:s + chunk_size] for s in range(0, len(puzzles), chunk_size)]
    if workers <= 1 or len(chunks) <= 1:
        results = [_unique_solutions_chunk(ch) for ch in chunks]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_unique_solutions_chunk, chunks))
    return np.concatenate(results) if results else np.zeros((0, 81), np.uint8)


def is_valid_solution(puzzle: np.ndarray, solution: np.ndarray) -> bool:
    """A complete grid where every row, column and box holds 1..9, agreeing with the clues."""
    s = np.asarray(solution).reshape(9, 9).astype(np.int64)
    p = np.asarray(puzzle).reshape(9, 9)
    if s.min() < 1 or s.max() > 9 or np.any((p != 0) & (p != s)):
        return False
    boxes = s.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)
    want = np.arange(1, 10)
    return all(np.array_equal(np.sort(g, axis=1), np.broadcast_to(want, (9, 9))) for g in (s, s.T, boxes))


# ---------------------------------------------------------------------------------------------
# Sources.

_PUZZLE_CHARS = frozenset("0123456789.")


def parse_grid(text: str) -> np.ndarray:
    """81 characters, `0` or `.` for a blank -> uint8 [81]."""
    return (np.frombuffer(text.replace(".", "0").encode(), dtype=np.uint8) - ord("0")).astype(np.uint8)


def read_puzzle_lines(path: str | Path) -> np.ndarray:
    """One puzzle per line (81 chars of 0-9 or `.`); blank, `#` comment and prose lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"puzzle file not found: {path}")
    grids = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if set(line) <= _PUZZLE_CHARS:
                if len(line) != 81:
                    raise ValueError(f"{path}:{lineno}: a puzzle line needs 81 cells, got {len(line)}")
                grids.append(parse_grid(line))
            # anything else is prose (a citation or title line) and is skipped
    if not grids:
        raise ValueError(f"{path}: no puzzles found (expected lines of 81 characters 0-9 or '.')")
    return np.stack(grids)


def read_csv(path: str | Path, min_difficulty: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The paper's CSV layout: header, then `source,question,answer,rating` (question uses `.` blanks)."""
    questions, answers = [], []
    for where, q, a, rating in paper_csv_rows(path, "Sudoku"):
        if min_difficulty is not None and int(rating) < min_difficulty:
            continue
        if len(q) != 81 or len(a) != 81 or not set(q) <= _PUZZLE_CHARS or not set(a) <= _PUZZLE_CHARS:
            raise ValueError(f"{where}: question and answer must be 81 characters of 0-9 or '.'")
        questions.append(parse_grid(q))
        answers.append(parse_grid(a))
    if not questions:
        raise ValueError(f"{path}: no puzzles (after min_difficulty={min_difficulty})")
    return np.stack(questions), np.stack(answers)


def download_hf_csv(repo: str, split: str) -> Path:
    """Fetch `{split}.csv` of a Hugging Face dataset repo (e.g. sapientinc/sudoku-extreme)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with `datasets`
        raise ValueError("--hf-repo needs the huggingface_hub package (pip install huggingface_hub)") from e
    try:
        return Path(hf_hub_download(repo, f"{split}.csv", repo_type="dataset"))
    except Exception as e:
        raise ValueError(f"could not download {split}.csv from Hugging Face dataset {repo}: {e}") from e


# ---------------------------------------------------------------------------------------------
# Augmentation: digit relabelling, transpose, band/row-in-band and stack/column-in-stack permutations.

def _line_permutations(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 9] permutations that shuffle the 3 bands and the 3 lines inside each band."""
    bands = np.argsort(rng.random((n, 3)), axis=1)
    inner = np.argsort(rng.random((n, 3, 3)), axis=2)
    return (bands[:, :, None] * 3 + inner).reshape(n, 9)


def augment(puzzles: np.ndarray, solutions: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """One random symmetry per row of [N, 81] puzzles and solutions (the same one for both)."""
    n = len(puzzles)
    digit_map = np.zeros((n, 10), dtype=np.uint8)
    digit_map[:, 1:] = np.argsort(rng.random((n, 9)), axis=1) + 1
    transpose = rng.random(n) < 0.5
    rows, cols = _line_permutations(rng, n), _line_permutations(rng, n)
    src = rows[:, :, None] * 9 + cols[:, None, :]                                # [n, 9, 9] source cell
    src = np.where(transpose[:, None, None], src.transpose(0, 2, 1), src).reshape(n, 81)

    def apply(grids: np.ndarray) -> np.ndarray:
        moved = np.take_along_axis(grids.reshape(n, 81), src, axis=1)
        return np.take_along_axis(digit_map, moved.astype(np.int64), axis=1)

    return apply(puzzles), apply(solutions)


# ---------------------------------------------------------------------------------------------
# Builder.

@dataclass
class SudokuBuildConfig:
    output_dir: str
    puzzles: str | None = None            # one-puzzle-per-line file
    source_csv: str | None = None         # the paper's CSV layout (train, or everything to split)
    test_csv: str | None = None           # optional CSV test split
    hf_repo: str | None = None            # e.g. sapientinc/sudoku-extreme (train.csv + test.csv)
    subsample_size: int | None = None
    num_aug: int = 0
    test_fraction: float = 0.1            # used when the source has no test split of its own
    test_size: int | None = None
    min_difficulty: int | None = None
    difficulty: str | None = None         # keep one propagation class (sudoku_difficulty.CLASSES)
    seed: int = 0
    workers: int = 2
    overwrite: bool = False


def _load_sources(cfg: SudokuBuildConfig) -> tuple[tuple[np.ndarray, np.ndarray | None],
                                                   tuple[np.ndarray, np.ndarray | None] | None]:
    given = [k for k in ("puzzles", "source_csv", "hf_repo") if getattr(cfg, k)]
    if len(given) != 1:
        raise ValueError("give exactly one source: --puzzles FILE, --source-csv FILE or --hf-repo REPO")
    if cfg.hf_repo:
        train = read_csv(download_hf_csv(cfg.hf_repo, "train"), cfg.min_difficulty)
        test = read_csv(download_hf_csv(cfg.hf_repo, "test"), cfg.min_difficulty)
        return train, test
    if cfg.source_csv:
        train = read_csv(cfg.source_csv, cfg.min_difficulty)
        return train, (read_csv(cfg.test_csv, cfg.min_difficulty) if cfg.test_csv else None)
    return (read_puzzle_lines(cfg.puzzles), None), None


def _checked(puzzles: np.ndarray, solutions: np.ndarray | None, workers: int, name: str
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """Solve (or verify) every puzzle; drop those without exactly one solution."""
    if solutions is None:
        solutions = solve_many(puzzles, workers=workers)
        keep = solutions.any(axis=1)
    else:
        keep = np.array([is_valid_solution(p, s) for p, s in zip(puzzles, solutions, strict=True)], dtype=bool)
    dropped = int((~keep).sum())
    if not keep.any():
        raise ValueError(f"{name}: no puzzle has exactly one valid solution")
    return puzzles[keep], solutions[keep], dropped


def build_split_arrays(puzzles: np.ndarray, solutions: np.ndarray, num_aug: int, rng: np.random.Generator
                       ) -> dict[str, np.ndarray]:
    """Each puzzle is a group holding itself plus `num_aug` augmented copies (one example each)."""
    n, cells = puzzles.shape
    per = 1 + num_aug
    inputs = np.empty((n, per, cells), dtype=np.uint8)
    labels = np.empty((n, per, cells), dtype=np.uint8)
    inputs[:, 0], labels[:, 0] = puzzles, solutions
    if num_aug:
        rep_p = np.repeat(puzzles, num_aug, axis=0)
        rep_s = np.repeat(solutions, num_aug, axis=0)
        aug_p, aug_s = augment(rep_p, rep_s, rng)
        inputs[:, 1:] = aug_p.reshape(n, num_aug, 81)
        labels[:, 1:] = aug_s.reshape(n, num_aug, 81)
    total = n * per
    return {
        "inputs": inputs.reshape(total, cells) + 1,
        "labels": labels.reshape(total, cells) + 1,
        "puzzle_identifiers": np.zeros(total, dtype=np.int32),
        "puzzle_indices": np.arange(total + 1, dtype=np.int32),
        "group_indices": np.arange(0, total + 1, per, dtype=np.int32),
    }


def sudoku_metadata(groups: int):
    """dataset.json of a Sudoku split of `groups` puzzles (one example each; vocab 11 as the paper's)."""
    from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata

    return PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11, seq_len=81,
                                 num_puzzle_identifiers=1, total_groups=groups, mean_puzzle_examples=1.0,
                                 sets=["all"])


def build_sudoku_dataset(cfg: SudokuBuildConfig, log=print) -> dict[str, int]:
    """Write `{output_dir}/{train,test}/` in the puzzle format; returns counts per split. Training puzzles
    whose solution grid is in a test puzzle's symmetry class are dropped; each split's difficulty mix goes
    to its dataset.json (`--difficulty` keeps one class)."""
    from hrm_ray.data.puzzles.format import atomic_dataset_dir, write_split
    from hrm_ray.data.puzzles.sudoku_difficulty import check_difficulty, classify_many, mix, mix_text
    from hrm_ray.data.puzzles.sudoku_generate import split_metadata

    if cfg.num_aug < 0:
        raise ValueError(f"--num-aug must be >= 0, got {cfg.num_aug}")
    check_difficulty(cfg.difficulty)
    rng = np.random.default_rng(cfg.seed)
    (train_q, train_a), test_src = _load_sources(cfg)
    if test_src is None:
        n_test = cfg.test_size if cfg.test_size is not None else int(round(len(train_q) * cfg.test_fraction))
        if not 0 < n_test < len(train_q):
            raise ValueError(f"test split of {n_test} puzzles out of {len(train_q)} leaves a split empty "
                             "(set --test-size or --test-fraction)")
        order = rng.permutation(len(train_q))
        test_idx, train_idx = order[:n_test], order[n_test:]
        test_src = (train_q[test_idx], None if train_a is None else train_a[test_idx])
        train_q, train_a = train_q[train_idx], None if train_a is None else train_a[train_idx]
    if cfg.subsample_size is not None and cfg.subsample_size < len(train_q):
        pick = np.sort(rng.choice(len(train_q), size=cfg.subsample_size, replace=False))
        train_q, train_a = train_q[pick], None if train_a is None else train_a[pick]

    checked = {}
    for split, (q, a) in (("test", test_src), ("train", (train_q, train_a))):
        q, a, dropped = _checked(q, a, cfg.workers, split)
        if dropped:
            log(f"{split}: dropped {dropped} puzzles without exactly one solution")
        checked[split] = (q, a)
    train_q, train_a, shared = drop_shared_grids(*checked["train"], checked["test"][1])
    if shared:
        log(f"train: dropped {shared} puzzles whose solution grid (or a symmetry image of it) is a test one")
    if not len(train_q):
        raise ValueError("train: every puzzle shares its solution grid (up to symmetry) with a test puzzle")
    counts = {}
    with atomic_dataset_dir(cfg.output_dir, overwrite=cfg.overwrite) as out:
        for split, (q, a), aug in (("train", (train_q, train_a), cfg.num_aug), ("test", checked["test"], 0)):
            classes = classify_many(q, (3, 3), workers=cfg.workers)
            if cfg.difficulty is not None:
                keep = classes == cfg.difficulty
                if not keep.any():
                    raise ValueError(f"{split}: no puzzle of difficulty {cfg.difficulty} ({mix_text(mix(classes))})")
                q, a, classes = q[keep], a[keep], classes[keep]
            arrays = build_split_arrays(q, a, aug, rng)
            write_split(out, split, {"all": arrays}, sudoku_metadata(len(q)))
            split_metadata(out / split, {"difficulty": mix(classes), "difficulty_filter": cfg.difficulty})
            counts[split] = len(arrays["inputs"])
            log(f"{split}: {len(q)} puzzles, {counts[split]} examples; {mix_text(mix(classes))}")
        (out / "identifiers.json").write_text('["<blank>"]\n')
    return counts


def drop_shared_grids(puzzles: np.ndarray, solutions: np.ndarray, other_solutions: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, int]:
    """Drop the puzzles whose solution is in the symmetry class of one of `other_solutions` (9x9 class key)."""
    from hrm_ray.data.puzzles.sudoku_grids import canonical_key

    taken = {canonical_key(s, (3, 3)) for s in other_solutions}
    keep = np.array([canonical_key(s, (3, 3)) not in taken for s in solutions], dtype=bool)
    return puzzles[keep], solutions[keep], int((~keep).sum())


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def iter_grids_text(grids: Iterable[np.ndarray]) -> Iterable[str]:
    """Grids back to 81-character lines (0 = blank), e.g. to write a puzzle file."""
    for g in grids:
        yield "".join(str(int(v)) for v in np.asarray(g).reshape(-1))
