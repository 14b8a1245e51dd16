"""Generated Sudoku with one solution each, its difficulty class, and honest splits.

Puzzles: a grid from every symmetry class (`sudoku_grids.random_grids`), then holes dug in a random cell
order, a hole kept only while the puzzle keeps exactly one solution, up to `blanks` holes (a grid that
cannot reach `blanks` is replaced). Each puzzle is classified (`sudoku_difficulty.classify`) and may be
kept only if of one class.

Splits (`generated_splits`):
- `train`: grids from the training classes;
- `test`: the same classes (easy or the chosen difficulty), no solution grid equal to a training one up to
  digit relabelling;
- `test_heldout_class`: grids from symmetry classes that no training grid belongs to (a stable fifth of the
  class keys); for 6x6 this is the strict rule "no symmetry image of a training grid" (there are about 50
  classes of 6x6 grids under the group, 47 seen among 2,000 generated grids, so in-class test grids are necessarily images of training ones);
- `test_search`: puzzles of the `search` class (singles do not solve them), grids not shared with training
  up to relabelling, dug to `search_blanks` holes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hrm_ray.data.puzzles.demo import count_solutions
from hrm_ray.data.puzzles.sudoku_difficulty import classify
from hrm_ray.data.puzzles.sudoku_grids import Box, canonical_key, class_bucket, random_grids

HELDOUT_BUCKETS = 5  # classes whose key falls in bucket 0 of 5 are held out of training


def _unique(puzzle: np.ndarray, box: Box) -> bool:
    if tuple(box) == (3, 3):
        from hrm_ray.data.puzzles.sudoku import solve

        return len(solve(puzzle, limit=2)) == 1
    return count_solutions(puzzle, box) == 1


def dig(grid: np.ndarray, box: Box, blanks: int | None, rng: np.random.Generator) -> np.ndarray | None:
    """`grid` with `blanks` holes (None: as many as one random cell order allows), every hole keeping the
    solution unique; None if the grid cannot reach `blanks` in that order."""
    puzzle = np.asarray(grid, dtype=np.uint8).copy()
    made = 0
    for cell in rng.permutation(len(puzzle)):
        digit = puzzle[cell]
        puzzle[cell] = 0
        if _unique(puzzle, box):
            made += 1
            if made == blanks:
                return puzzle
        else:
            puzzle[cell] = digit
    return puzzle if blanks is None else None


def relabel_key(grid: np.ndarray) -> bytes:
    """The grid with digits renamed in order of first appearance: equal for grids equal up to relabelling."""
    g = np.asarray(grid, dtype=np.uint8)
    _, first = np.unique(g, return_index=True)
    names = np.zeros(int(g.max()) + 1, dtype=np.uint8)
    names[g[np.sort(first)]] = np.arange(1, len(first) + 1, dtype=np.uint8)
    return names[g].tobytes()


def heldout_class(grid: np.ndarray, box: Box) -> bool:
    return class_bucket(canonical_key(grid, box), HELDOUT_BUCKETS) == 0


@dataclass
class Examples:
    puzzles: list[np.ndarray] = field(default_factory=list)
    solutions: list[np.ndarray] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    def add(self, puzzle: np.ndarray, solution: np.ndarray, cls: str) -> None:
        self.puzzles.append(puzzle)
        self.solutions.append(solution)
        self.classes.append(cls)

    def __len__(self) -> int:
        return len(self.puzzles)

    def arrays(self, cells: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if not self.puzzles:
            return np.zeros((0, cells), np.uint8), np.zeros((0, cells), np.uint8), []
        return np.stack(self.puzzles), np.stack(self.solutions), list(self.classes)


def draw(count: int, box: Box, blanks: int | None, rng: np.random.Generator, difficulty: str | None = None,
         heldout: bool | None = None, seen: set[bytes] | None = None, max_grids: int | None = None,
         by_grid: bool = True) -> Examples:
    """`count` puzzles of `difficulty` (None: any class) from grids not in `seen` (keys up to relabelling,
    updated here); `heldout` True/False keeps only grids of held-out/training classes (None: any).
    `by_grid=False` (grids too few to keep apart, 4x4) only keeps the puzzles themselves distinct."""
    out = Examples()
    seen = set() if seen is None else seen
    tries, limit = 0, max_grids or 100 * count + 1000
    while len(out) < count:
        for grid in random_grids(min(64, 2 * (count - len(out)) + 4), box, rng):
            tries += 1
            if tries > limit:
                raise ValueError(f"could not generate {count} puzzles ({difficulty or 'any'} class, "
                                 f"{blanks or 'max'} blanks) from {limit} grids: change --blanks (search needs many: "
                                 "--blanks max) or --difficulty")
            key = relabel_key(grid) if by_grid else b""
            if key in seen or (heldout is not None and heldout_class(grid, box) != heldout):
                continue
            puzzle = dig(grid, box, blanks, rng)
            if puzzle is None:
                continue
            cls = classify(puzzle, box)
            if difficulty is not None and cls != difficulty:
                continue
            key = key or puzzle.tobytes()
            if key in seen:
                continue
            seen.add(key)
            out.add(puzzle, grid, cls)
            if len(out) == count:
                break
    return out


def _draw_batch(batch: dict[str, np.ndarray], box: Box, blanks: int | None, seed: int, per_task: int,
                difficulty: str | None, heldout: bool | None) -> dict[str, np.ndarray]:
    """Ray Data body: `per_task` puzzles per task id, from a generator seeded by (seed, task id)."""
    puzzles, solutions, classes, order = [], [], [], []
    for task_id in np.asarray(batch["id"]).tolist():
        ex = draw(per_task, box, blanks, np.random.default_rng([seed, task_id]), difficulty, heldout)
        order += [task_id * per_task + i for i in range(len(ex))]
        puzzles += ex.puzzles
        solutions += ex.solutions
        classes += ex.classes
    return {"order": np.array(order), "puzzle": np.stack(puzzles), "solution": np.stack(solutions),
            "cls": np.array(classes, dtype=object)}


def draw_ray(count: int, box: Box, blanks: int | None, seed: int, difficulty: str | None = None,
             heldout: bool | None = None, seen: set[bytes] | None = None, per_task: int = 50) -> Examples:
    """`draw` as Ray Data tasks (`ray.data.range(tasks).map_batches`, one seed per task); duplicates across
    tasks and grids in `seen` are dropped on the driver, and another round runs until `count` are in."""
    import ray

    out, seen = Examples(), set() if seen is None else seen
    round_ = 0
    while len(out) < count:
        tasks = max(1, -(-int((count - len(out)) * 1.1) // per_task))
        ds = ray.data.range(tasks, override_num_blocks=tasks).map_batches(
            _draw_batch, batch_size=1, batch_format="numpy",
            fn_kwargs={"box": tuple(box), "blanks": blanks, "seed": seed * 1000 + round_, "per_task": per_task,
                       "difficulty": difficulty, "heldout": heldout})
        for row in sorted(ds.take_all(), key=lambda row: int(row["order"])):
            key = relabel_key(row["solution"])
            if key not in seen and len(out) < count:
                seen.add(key)
                out.add(row["puzzle"].astype(np.uint8), row["solution"].astype(np.uint8), str(row["cls"]))
        round_ += 1
    return out


# ---------------------------------------------------------------------------------------------
# Builder.

SPLIT_RULE = ("test: training classes, no solution grid equal to a training one up to digit relabelling; "
              "test_heldout_class: grids of symmetry classes held out of training (no symmetry image of a "
              "training grid); test_search: needs-search puzzles, grids not in training")


@dataclass
class GeneratedSudokuConfig:
    output_dir: str
    box: Box = (2, 3)
    train_size: int = 1000
    test_size: int = 200
    heldout_class_size: int = 200
    search_test_size: int = 0
    blanks: int | None = 20                # None: dig as far as each grid allows
    search_blanks: int | None = None
    difficulty: str | None = None          # keep one class in train/test/test_heldout_class
    seed: int = 0
    use_ray: bool = False
    distinct_grids: bool = True            # False: only puzzles distinct (4x4 has 288 grids in all)
    overwrite: bool = False


def split_metadata(split_dir, extra: dict) -> None:
    """Add `extra` to a written split's dataset.json (the loader ignores keys it does not know)."""
    import json
    from pathlib import Path

    path = Path(split_dir) / "dataset.json"
    meta = json.loads(path.read_text())
    meta.update(extra)
    path.write_text(json.dumps(meta, indent=2) + "\n")


def generated_splits(cfg: GeneratedSudokuConfig) -> dict[str, Examples]:
    """The four splits of `cfg`, grids disjoint up to relabelling across all of them."""
    from hrm_ray.data.puzzles.sudoku_difficulty import check_difficulty

    check_difficulty(cfg.difficulty)
    n = cfg.box[0] * cfg.box[1]
    if cfg.blanks is not None and not 0 < cfg.blanks < n * n:
        raise ValueError(f"--blanks must be in 1..{n * n - 1} for {n}x{n}, got {cfg.blanks}")
    if cfg.train_size < 1 or cfg.test_size < 1:
        raise ValueError("--train-size and --test-size must be at least 1")
    seen: set[bytes] = set()
    specs = [("train", cfg.train_size, cfg.blanks, cfg.difficulty, False),
             ("test", cfg.test_size, cfg.blanks, cfg.difficulty, False),
             ("test_heldout_class", cfg.heldout_class_size, cfg.blanks, cfg.difficulty, True),
             ("test_search", cfg.search_test_size, cfg.search_blanks, "search", False)]
    out = {}
    for k, (name, count, blanks, difficulty, heldout) in enumerate(specs):
        if count <= 0:
            continue
        if cfg.use_ray:
            out[name] = draw_ray(count, cfg.box, blanks, cfg.seed * 10 + k, difficulty, heldout, seen)
        else:
            rng = np.random.default_rng([cfg.seed, k])
            out[name] = draw(count, cfg.box, blanks, rng, difficulty, heldout, seen, by_grid=cfg.distinct_grids)
    return out


def build_generated_sudoku(cfg: GeneratedSudokuConfig, log=print) -> dict[str, dict[str, int]]:
    """Write `{output_dir}/{train,test,test_heldout_class,test_search}/`; returns the class mix per split."""
    from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata, atomic_dataset_dir, write_split
    from hrm_ray.data.puzzles.sudoku import build_split_arrays
    from hrm_ray.data.puzzles.sudoku_difficulty import mix, mix_text

    n = cfg.box[0] * cfg.box[1]
    splits = generated_splits(cfg)
    mixes = {}
    with atomic_dataset_dir(cfg.output_dir, overwrite=cfg.overwrite) as out:
        for name, ex in splits.items():
            puzzles, solutions, classes = ex.arrays(n * n)
            arrays = build_split_arrays(puzzles, solutions, 0, np.random.default_rng(cfg.seed))
            meta = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=n + 2,
                                         seq_len=n * n, num_puzzle_identifiers=1, total_groups=len(puzzles),
                                         mean_puzzle_examples=1.0, sets=["all"])
            write_split(out, name, {"all": arrays}, meta)
            mixes[name] = mix(classes)
            blanks = cfg.search_blanks if name == "test_search" else cfg.blanks
            split_metadata(out / name, {"box": list(cfg.box), "blanks": blanks if blanks is not None else "max",
                                        "difficulty": mixes[name], "difficulty_filter": cfg.difficulty,
                                        "grid_generator": "backtracking fill, every symmetry class",
                                        "split_rule": SPLIT_RULE})
            log(f"{name}: {len(puzzles)} {n}x{n} puzzles, {blanks or 'max'} blanks; {mix_text(mixes[name])}")
        (out / "identifiers.json").write_text('["<blank>"]\n')
    return mixes
