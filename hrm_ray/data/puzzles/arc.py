"""ARC-AGI tasks -> the puzzle format, with dihedral and colour augmentations.

Grids are placed top-left in a 30x30 canvas: PAD = 0, EOS = 1 marks the row below and the
column right of the grid, colours 0..9 become tokens 2..11 (vocab 12, seq_len 900). Each task
is a group; each augmented copy (dihedral transform + permutation of colours 1..9, black kept)
is a puzzle with its own identifier, and duplicates are dropped. `augmentations.json` records,
per identifier, the transform and its inverse so an evaluation can undo predictions and vote.

Training tasks put all their pairs in `train`. Evaluation tasks put their demonstration pairs
in `train` (as the paper does: the model learns their puzzle embeddings) and their test pairs
in `test`; with `separate_eval` nothing of an evaluation task reaches `train`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GRID = 30
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 10 + COLOUR_OFFSET
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    """The 8 symmetries of the square: 0 identity, 1-3 rotations, 4 flip lr, 5 flip ud, 6 transpose, 7 anti-transpose."""
    ops = (lambda a: a, lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 3),
           np.fliplr, np.flipud, lambda a: a.T, lambda a: np.fliplr(np.rot90(a, 1)))
    return np.ascontiguousarray(ops[tid](grid))


def apply_augmentation(grid: np.ndarray, tid: int, colour_map: np.ndarray) -> np.ndarray:
    return colour_map[dihedral(grid, tid)]


def undo_augmentation(grid: np.ndarray, tid: int, colour_map: np.ndarray) -> np.ndarray:
    return dihedral(np.argsort(colour_map)[grid], DIHEDRAL_INVERSE[tid])


def encode_grid(grid: np.ndarray) -> np.ndarray:
    """Colour grid [h, w] -> 900 tokens."""
    h, w = grid.shape
    out = np.full((GRID, GRID), PAD, dtype=np.uint8)
    out[:h, :w] = grid + COLOUR_OFFSET
    if h < GRID:
        out[h, :w] = EOS
    if w < GRID:
        out[:h, w] = EOS
    return out.reshape(-1)


def decode_grid(tokens: np.ndarray) -> np.ndarray:
    """900 tokens -> the colour grid: the largest top-left rectangle of colour tokens before EOS/PAD."""
    t = np.asarray(tokens).reshape(GRID, GRID)
    colour = t >= COLOUR_OFFSET
    w = int(np.argmin(colour[0])) if not colour[0].all() else GRID
    h = int(np.argmin(colour[:, 0])) if not colour[:, 0].all() else GRID
    if w == 0 or h == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    block = colour[:h, :w]
    rows = int(np.argmin(block.all(axis=1))) if not block.all() else h
    return (t[:rows, :w] - COLOUR_OFFSET).astype(np.uint8)


@dataclass
class ArcTask:
    task_id: str
    train: list[tuple[np.ndarray, np.ndarray]]
    test: list[tuple[np.ndarray, np.ndarray]]
    is_eval: bool = False


def _grid(raw, where: str) -> np.ndarray:
    try:
        arr = np.array(raw, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: grid is not a rectangular list of rows") from e
    if arr.ndim != 2 or not (1 <= arr.shape[0] <= GRID and 1 <= arr.shape[1] <= GRID):
        raise ValueError(f"{where}: grid shape {arr.shape} outside 1..{GRID} x 1..{GRID}")
    if arr.min() < 0 or arr.max() > 9:
        raise ValueError(f"{where}: colours must be 0..9")
    return arr.astype(np.uint8)


def load_task(path: str | Path, is_eval: bool = False) -> ArcTask:
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    pairs = {}
    for kind in ("train", "test"):
        if kind not in raw:
            raise ValueError(f"{path}: missing '{kind}' list")
        pairs[kind] = [(_grid(ex["input"], f"{path} {kind}[{i}].input"), _grid(ex["output"], f"{path} {kind}[{i}].output"))
                       for i, ex in enumerate(raw[kind])]
    return ArcTask(path.stem, pairs["train"], pairs["test"], is_eval)


def load_tasks(directory: str | Path, is_eval: bool = False, limit: int | None = None) -> list[ArcTask]:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"ARC task directory not found: {directory}")
    files = sorted(directory.glob("*.json"))[:limit]
    if not files:
        raise ValueError(f"{directory}: no *.json ARC tasks")
    return [load_task(f, is_eval) for f in files]


@dataclass
class Augmentation:
    name: str
    task_id: str
    dihedral: int
    colour_map: np.ndarray              # colour c -> colour_map[c]; colour_map[0] == 0

    def as_json(self) -> dict:
        inv = np.argsort(self.colour_map)
        return {"name": self.name, "task": self.task_id, "dihedral": self.dihedral,
                "inverse_dihedral": DIHEDRAL_INVERSE[self.dihedral], "colour_map": self.colour_map.tolist(),
                "inverse_colour_map": inv.tolist()}


def task_augmentations(task: ArcTask, num_aug: int, rng: np.random.Generator, retries_factor: int = 5
                       ) -> list[Augmentation]:
    """Identity plus up to num_aug distinct augmentations (by the hash of all transformed pairs)."""
    identity = Augmentation(task.task_id, task.task_id, 0, np.arange(10, dtype=np.uint8))
    pairs = task.train + task.test

    def digest(aug: Augmentation) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for parts in sorted([b"".join(g.shape[0].to_bytes(1, "little") + g.shape[1].to_bytes(1, "little")
                                      + apply_augmentation(g, aug.dihedral, aug.colour_map).tobytes() for g in pair)
                             for pair in pairs]):
            h.update(parts)
        return h.digest()

    out, seen = [identity], {digest(identity)}
    for _ in range(retries_factor * num_aug):
        if len(out) > num_aug:
            break
        tid = int(rng.integers(0, 8))
        cmap = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
        aug = Augmentation(f"{task.task_id}|t{tid}|{''.join(map(str, cmap[1:]))}", task.task_id, tid, cmap)
        d = digest(aug)
        if d not in seen:
            seen.add(d)
            out.append(aug)
    return out


def _augment_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], aug: Augmentation
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(apply_augmentation(x, aug.dihedral, aug.colour_map), apply_augmentation(y, aug.dihedral, aug.colour_map))
            for x, y in pairs]


@dataclass
class _SplitBuffer:
    inputs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    puzzle_identifiers: list[int] = field(default_factory=list)
    puzzle_indices: list[int] = field(default_factory=lambda: [0])
    group_indices: list[int] = field(default_factory=lambda: [0])

    def add_group(self, puzzles: list[tuple[int, list[tuple[np.ndarray, np.ndarray]]]]) -> None:
        for pid, pairs in puzzles:
            for x, y in pairs:
                self.inputs.append(encode_grid(x))
                self.labels.append(encode_grid(y))
            self.puzzle_indices.append(len(self.inputs))
            self.puzzle_identifiers.append(pid)
        self.group_indices.append(len(self.puzzle_identifiers))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"inputs": np.stack(self.inputs), "labels": np.stack(self.labels),
                "puzzle_identifiers": np.array(self.puzzle_identifiers, dtype=np.int32),
                "puzzle_indices": np.array(self.puzzle_indices, dtype=np.int32),
                "group_indices": np.array(self.group_indices, dtype=np.int32)}


@dataclass
class ArcBuildConfig:
    output_dir: str
    tasks_dirs: list[str]
    eval_tasks_dirs: list[str] = field(default_factory=list)
    num_aug: int = 1000
    separate_eval: bool = False
    limit: int | None = None             # first N tasks of each directory (smoke tests)
    seed: int = 42
    overwrite: bool = False


def build_arc_dataset(cfg: ArcBuildConfig, log=print) -> dict[str, int]:
    from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata, atomic_dataset_dir, write_split

    if cfg.num_aug < 0:
        raise ValueError(f"--num-aug must be >= 0, got {cfg.num_aug}")
    tasks = [t for d in cfg.tasks_dirs for t in load_tasks(d, False, cfg.limit)]
    tasks += [t for d in cfg.eval_tasks_dirs for t in load_tasks(d, True, cfg.limit)]
    if not any(t.is_eval for t in tasks):
        raise ValueError("no evaluation tasks: pass --eval-tasks-dir so the test split is not empty")
    rng = np.random.default_rng(cfg.seed)
    names = ["<blank>"]
    augs_json: list[dict | None] = [None]
    splits = {"train": _SplitBuffer(), "test": _SplitBuffer()}
    for task in tasks:
        train_group, test_group = [], []
        for aug in task_augmentations(task, cfg.num_aug, rng):
            pid = len(names)
            names.append(aug.name)
            augs_json.append(aug.as_json())
            if not task.is_eval:
                train_group.append((pid, _augment_pairs(task.train + task.test, aug)))
                continue
            if not cfg.separate_eval and task.train:
                train_group.append((pid, _augment_pairs(task.train, aug)))
            if task.test:
                test_group.append((pid, _augment_pairs(task.test, aug)))
        if train_group:
            splits["train"].add_group(train_group)
        if test_group:
            splits["test"].add_group(test_group)

    counts = {}
    with atomic_dataset_dir(cfg.output_dir, overwrite=cfg.overwrite) as out:
        for split, buf in splits.items():
            if not buf.inputs:
                raise ValueError(f"ARC build: the {split} split is empty")
            arrays = buf.arrays()
            n_puzzles = len(arrays["puzzle_identifiers"])
            meta = PuzzleDatasetMetadata(
                pad_id=PAD, ignore_label_id=PAD, blank_identifier_id=0, vocab_size=VOCAB_SIZE, seq_len=GRID * GRID,
                num_puzzle_identifiers=len(names), total_groups=len(arrays["group_indices"]) - 1,
                mean_puzzle_examples=len(arrays["inputs"]) / n_puzzles, sets=["all"])
            write_split(out, split, {"all": arrays}, meta)
            counts[split] = len(arrays["inputs"])
            log(f"{split}: {meta.total_groups} tasks, {n_puzzles} puzzles, {counts[split]} examples")
        (out / "identifiers.json").write_text(json.dumps(names) + "\n")
        (out / "augmentations.json").write_text(json.dumps(augs_json) + "\n")
    return counts
