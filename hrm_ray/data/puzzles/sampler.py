"""Group-based epochs (the paper's sampling) and sequential evaluation batches.

An epoch visits every group once in a random order and takes one random puzzle of the group;
that puzzle's examples fill the batch (truncated when the batch is full). Training runs
`eval_interval` epochs per iteration, then evaluates. The incomplete last batch of an
iteration is dropped, so every step sees a full global batch. The order depends only on
(seed, iteration, set), so every worker computes the same global batch and takes its slice.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hrm_ray.data.puzzles.format import IGNORE_LABEL_ID, PuzzleSet, PuzzleSplit, collate, read_rows


def num_iterations(epochs: int, eval_interval: int | None) -> int:
    """How many train/eval iterations `epochs` makes; epochs must be a multiple of eval_interval."""
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    interval = epochs if eval_interval is None else eval_interval
    if interval <= 0:
        raise ValueError(f"eval_interval must be positive, got {interval}")
    if epochs % interval:
        raise ValueError(f"epochs ({epochs}) must be a multiple of eval_interval ({interval}): "
                         f"try epochs={epochs - epochs % interval or interval} or an eval_interval dividing {epochs}")
    return epochs // interval


def local_batch_size(global_batch_size: int, world_size: int) -> int:
    if global_batch_size <= 0 or global_batch_size % world_size:
        raise ValueError(f"global_batch_size ({global_batch_size}) must be a positive multiple of "
                         f"the number of workers ({world_size})")
    return global_batch_size // world_size


def iteration_batches(pset: PuzzleSet, global_batch_size: int, epochs: int, rng: np.random.Generator
                      ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(example indices [B], puzzle indices [B]) for each full global batch of `epochs` epochs."""
    gi, pi = np.asarray(pset.group_indices), np.asarray(pset.puzzle_indices)
    groups = np.concatenate([rng.permutation(pset.num_groups) for _ in range(epochs)])
    puzzles = gi[groups] + (rng.random(len(groups)) * (gi[groups + 1] - gi[groups])).astype(np.int64)
    sizes = pi[puzzles + 1] - pi[puzzles]
    if np.all(sizes == 1):  # one example per puzzle (Sudoku, Maze): plain reshaping
        full = len(puzzles) // global_batch_size * global_batch_size
        for s in range(0, full, global_batch_size):
            p = puzzles[s:s + global_batch_size]
            yield pi[p], p
        return
    examples: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    filled = 0
    for p, size in zip(puzzles.tolist(), sizes.tolist(), strict=True):
        take = min(size, global_batch_size - filled)
        examples.append(pi[p] + rng.choice(size, take, replace=False))
        owners.append(np.full(take, p, dtype=np.int64))
        filled += take
        if filled == global_batch_size:
            yield np.concatenate(examples), np.concatenate(owners)
            examples, owners, filled = [], [], 0


@dataclass
class GroupEpochSampler:
    """Training batches of one split for iteration `it` (each iteration = `epochs_per_iter` epochs)."""
    split: PuzzleSplit
    global_batch_size: int
    epochs_per_iter: int
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        self.local_batch_size = local_batch_size(self.global_batch_size, self.world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside world of {self.world_size}")

    def indices(self, it: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(set name, this rank's example indices, their puzzle indices) per step."""
        lo, hi = self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size
        for set_idx, (name, pset) in enumerate(self.split.sets.items()):
            rng = np.random.default_rng([self.seed, it, set_idx])
            for ex, pz in iteration_batches(pset, self.global_batch_size, self.epochs_per_iter, rng):
                yield name, ex[lo:hi], pz[lo:hi]

    def batches(self, it: int) -> Iterator[dict]:
        for name, ex, pz in self.indices(it):
            pset = self.split.sets[name]
            yield collate(read_rows(pset.inputs, ex), read_rows(pset.labels, ex), pset.puzzle_identifiers[pz],
                          self.split.metadata)

    def steps_per_iteration(self) -> int:
        """Exact when every puzzle has one example; an upper bound otherwise."""
        meta = self.split.metadata
        return int(self.epochs_per_iter * meta.total_groups * meta.mean_puzzle_examples) // self.global_batch_size


def eval_batches(split: PuzzleSplit, global_batch_size: int, rank: int = 0, world_size: int = 1
                 ) -> Iterator[tuple[str, dict, int]]:
    """Every example once, in order: (set name, this rank's batch, real examples in it).

    The last batch is padded to the local batch size with pad inputs, ignored labels and the
    blank identifier, so padded rows have no label and do not count in the metrics.
    """
    local = local_batch_size(global_batch_size, world_size)
    meta = split.metadata
    for name, pset in split.sets.items():
        for start in range(0, pset.num_examples, global_batch_size):
            lo = min(start + rank * local, pset.num_examples)
            hi = min(start + (rank + 1) * local, pset.num_examples)
            real = hi - lo
            ids = pset.puzzle_identifiers[pset.example_puzzles(lo, hi)]
            batch = collate(pset.inputs[lo:hi], pset.labels[lo:hi], ids, meta)
            if real < local:
                pad = local - real
                fill = {"inputs": meta.pad_id, "labels": IGNORE_LABEL_ID,
                        "puzzle_identifiers": meta.blank_identifier_id}
                batch = {k: _pad_rows(v, pad, fill[k]) for k, v in batch.items()}
            yield name, batch, real


def _pad_rows(t, pad: int, value: int):
    import torch

    return torch.cat([t, torch.full((pad, *t.shape[1:]), value, dtype=t.dtype)])
