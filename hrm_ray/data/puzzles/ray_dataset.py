"""A puzzle split as a Ray Dataset, so Ray Train can shard it with `get_dataset_shard`.

Training: the rows of one iteration (`epochs_per_iter` group-based epochs, full batches only)
in the sampler's order; each worker streams its shard and batches it locally. The example
indices go through the object store; the rows are read from the memory-mapped .npy files by
the Ray Data workers, so memory does not grow with the dataset.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hrm_ray.data.puzzles.format import IGNORE_LABEL_ID, load_split, read_rows
from hrm_ray.data.puzzles.sampler import GroupEpochSampler


def _read_rows(batch: dict[str, np.ndarray], dataset_dir: str, split: str) -> dict[str, np.ndarray]:
    """Ray Data UDF: example/puzzle indices -> model rows (labels use -100 for "no loss").

    Opening the split is cheap (metadata plus memory maps), so each task does it itself.
    """
    puzzle_split = load_split(dataset_dir, split)
    n, seq_len = len(batch["example"]), puzzle_split.metadata.seq_len
    out = {"inputs": np.empty((n, seq_len), np.int64), "labels": np.empty((n, seq_len), np.int64),
           "puzzle_identifiers": np.empty(n, np.int64)}
    for name in np.unique(batch["set"]):
        rows = np.flatnonzero(batch["set"] == name)
        pset = puzzle_split.sets[str(name)]
        ex = batch["example"][rows]
        out["inputs"][rows] = read_rows(pset.inputs, ex)
        out["labels"][rows] = read_rows(pset.labels, ex)
        out["puzzle_identifiers"][rows] = pset.puzzle_identifiers[batch["puzzle"][rows]]
    ignore = puzzle_split.metadata.ignore_label_id
    if ignore is not None:
        out["labels"][out["labels"] == ignore] = IGNORE_LABEL_ID
    return out


def train_dataset(dataset_dir: str | Path, global_batch_size: int, epochs_per_iter: int, iteration: int,
                  seed: int = 0, split: str = "train"):
    """Ray Dataset with columns inputs [L], labels [L], puzzle_identifiers for one iteration."""
    import pyarrow as pa
    import ray.data

    puzzle_split = load_split(dataset_dir, split)
    sampler = GroupEpochSampler(puzzle_split, global_batch_size, epochs_per_iter, seed)
    parts = [(name, ex, pz) for name, ex, pz in sampler.indices(iteration)]
    if not parts:
        raise ValueError(f"{dataset_dir}/{split}: no full batch of {global_batch_size} in {epochs_per_iter} epochs")
    index = {"set": np.concatenate([np.full(len(ex), name) for name, ex, _ in parts]),
             "example": np.concatenate([ex for _, ex, _ in parts]),
             "puzzle": np.concatenate([pz for _, _, pz in parts])}
    table = pa.table(index)
    return ray.data.from_arrow(table).map_batches(
        _read_rows, fn_kwargs={"dataset_dir": str(dataset_dir), "split": split}, batch_size=global_batch_size,
        batch_format="numpy")


def eval_dataset(dataset_dir: str | Path, split: str = "test"):
    """Every example of a split once, in order."""
    import pyarrow as pa
    import ray.data

    puzzle_split = load_split(dataset_dir, split)
    names, examples, puzzles = [], [], []
    for name, pset in puzzle_split.sets.items():
        names.append(np.full(pset.num_examples, name))
        examples.append(np.arange(pset.num_examples))
        puzzles.append(pset.example_puzzles(0, pset.num_examples))
    table = pa.table({"set": np.concatenate(names), "example": np.concatenate(examples),
                      "puzzle": np.concatenate(puzzles)})
    return ray.data.from_arrow(table).map_batches(
        _read_rows, fn_kwargs={"dataset_dir": str(dataset_dir), "split": split}, batch_format="numpy")
