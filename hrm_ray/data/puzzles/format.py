"""The paper's puzzle dataset layout, read memory-mapped and written atomically.

    DIR/identifiers.json                      puzzle identifier names (index = id, 0 = "<blank>")
    DIR/{split}/dataset.json                  PuzzleDatasetMetadata
    DIR/{split}/{set}__inputs.npy             [examples, seq_len] token ids
    DIR/{split}/{set}__labels.npy             [examples, seq_len] token ids (ignore_label_id = no loss)
    DIR/{split}/{set}__puzzle_identifiers.npy [puzzles] int32 identifier of each puzzle
    DIR/{split}/{set}__puzzle_indices.npy     [puzzles + 1] first example of each puzzle (CSR offsets)
    DIR/{split}/{set}__group_indices.npy      [groups + 1] first puzzle of each group (CSR offsets)

A group is an original puzzle with its augmentations; an epoch samples one puzzle per group.
"""
from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from hrm_ray.atomic import staged_dir

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
IGNORE_LABEL_ID = -100


@dataclass
class PuzzleDatasetMetadata:
    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    sets: list[str]

    @classmethod
    def load(cls, path: str | Path) -> PuzzleDatasetMetadata:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dataset metadata not found: {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        names = {f.name for f in fields(cls)}
        missing = sorted(names - raw.keys())
        if missing:
            raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
        return cls(**{k: raw[k] for k in names})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


@dataclass
class PuzzleSet:
    """One named set of a split; inputs/labels may be memory-mapped."""
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def num_examples(self) -> int:
        return len(self.inputs)

    @property
    def num_puzzles(self) -> int:
        return len(self.puzzle_indices) - 1

    @property
    def num_groups(self) -> int:
        return len(self.group_indices) - 1

    def example_puzzles(self, start: int, stop: int) -> np.ndarray:
        """Index of the puzzle that owns each example in [start, stop)."""
        return np.searchsorted(self.puzzle_indices, np.arange(start, stop), side="right") - 1


@dataclass
class PuzzleSplit:
    path: Path
    metadata: PuzzleDatasetMetadata
    sets: dict[str, PuzzleSet]


def validate_set(arrays: dict[str, np.ndarray], seq_len: int, where: str) -> None:
    """Check the CSR layout is consistent; the message names the file at fault."""
    for name in FIELDS:
        if name not in arrays:
            raise ValueError(f"{where}__{name}.npy: missing")
    inputs, labels = arrays["inputs"], arrays["labels"]
    pi, gi, ids = arrays["puzzle_indices"], arrays["group_indices"], arrays["puzzle_identifiers"]
    if inputs.ndim != 2 or inputs.shape[1] != seq_len:
        raise ValueError(f"{where}__inputs.npy: shape {inputs.shape}, expected [N, seq_len={seq_len}]")
    if labels.shape != inputs.shape:
        raise ValueError(f"{where}__labels.npy: shape {labels.shape} differs from inputs {inputs.shape}")
    if pi.ndim != 1 or len(pi) < 2 or pi[0] != 0 or pi[-1] != len(inputs) or np.any(np.diff(pi) <= 0):
        raise ValueError(f"{where}__puzzle_indices.npy: must rise strictly from 0 to {len(inputs)} examples")
    if len(ids) != len(pi) - 1:
        raise ValueError(f"{where}__puzzle_identifiers.npy: {len(ids)} entries for {len(pi) - 1} puzzles")
    if gi.ndim != 1 or len(gi) < 2 or gi[0] != 0 or gi[-1] != len(pi) - 1 or np.any(np.diff(gi) <= 0):
        raise ValueError(f"{where}__group_indices.npy: must rise strictly from 0 to {len(pi) - 1} puzzles")


def load_split(dataset_dir: str | Path, split: str, mmap: bool = True) -> PuzzleSplit:
    """Read `dataset_dir/split`; inputs and labels are memory-mapped unless mmap=False."""
    path = Path(dataset_dir) / split
    if not path.is_dir():
        raise FileNotFoundError(f"dataset split not found: {path}")
    meta = PuzzleDatasetMetadata.load(path / "dataset.json")
    sets = {}
    for set_name in meta.sets:
        arrays = {}
        for name in FIELDS:
            file = path / f"{set_name}__{name}.npy"
            if not file.is_file():
                raise FileNotFoundError(f"dataset file not found: {file}")
            mode = "r" if mmap and name in ("inputs", "labels") else None
            arrays[name] = np.load(file, mmap_mode=mode)
        validate_set(arrays, meta.seq_len, str(path / set_name))
        sets[set_name] = PuzzleSet(**arrays)
    return PuzzleSplit(path=path, metadata=meta, sets=sets)


def write_split(root: str | Path, split: str, sets: dict[str, dict[str, np.ndarray]],
                metadata: PuzzleDatasetMetadata) -> Path:
    """Write one split's arrays and dataset.json under root/split (validated first)."""
    path = Path(root) / split
    path.mkdir(parents=True, exist_ok=True)
    if sorted(sets) != sorted(metadata.sets):
        raise ValueError(f"metadata.sets {metadata.sets} does not match the sets written {sorted(sets)}")
    for set_name, arrays in sets.items():
        validate_set(arrays, metadata.seq_len, str(path / set_name))
        for name in FIELDS:
            np.save(path / f"{set_name}__{name}.npy", arrays[name])
    metadata.save(path / "dataset.json")
    return path


@contextlib.contextmanager
def atomic_dataset_dir(output_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes `output_dir` only when the block succeeds
    (`staged_dir`: also removes what a crashed earlier build of `output_dir` left)."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output-dir {out} is an existing file, not a directory")
    if out.exists() and not overwrite:
        raise ValueError(f"output directory already exists: {out} (pass --overwrite to replace it)")
    with staged_dir(out) as tmp:
        yield tmp


def read_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """array[rows] read in ascending order (kinder to a memory map), returned in the order asked."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    out[order] = array[rows[order]]
    return out


def collate(inputs: np.ndarray, labels: np.ndarray, puzzle_identifiers: np.ndarray,
            metadata: PuzzleDatasetMetadata) -> dict:
    """Numpy rows -> the model batch: long tensors, labels equal to ignore_label_id become -100."""
    import torch

    labels = np.array(labels, dtype=np.int64)
    if metadata.ignore_label_id is not None:
        labels[labels == metadata.ignore_label_id] = IGNORE_LABEL_ID
    return {
        "inputs": torch.from_numpy(np.array(inputs, dtype=np.int64)),
        "labels": torch.from_numpy(labels),
        "puzzle_identifiers": torch.from_numpy(np.array(puzzle_identifiers, dtype=np.int64)),
    }


def paper_csv_rows(path: str | Path, what: str) -> Iterator[tuple[str, str, str, str]]:
    """Rows of the paper's CSV layout (header, then `source,question,answer,rating`) as
    (`file:line` for errors, question, answer, rating)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or len(header) != 4:
            raise ValueError(f"{path}: expected header source,question,answer,rating; got {header}")
        for lineno, row in enumerate(reader, 2):
            if len(row) != 4:
                raise ValueError(f"{path}:{lineno}: expected 4 fields (source,question,answer,rating)")
            yield f"{path}:{lineno}", row[1], row[2], row[3]
