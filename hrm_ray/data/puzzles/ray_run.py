"""A whole puzzle training run as one lazy Ray Dataset, and the collate its shards use in the workers.

The dataset holds the rows of every iteration (`epochs_per_iter` group-based epochs, full global batches
only) in the sampler's order per iteration: the example indices of an iteration are made by a Ray Data
task when the stream reaches it, and the rows are read from the memory-mapped .npy files, so neither the
driver nor the object store holds the run's index. Ray Train splits it across workers
(`get_dataset_shard`); each worker batches its shard at `global_batch_size / workers`.
"""
from __future__ import annotations

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from hrm_ray.data.puzzles.format import load_split
from hrm_ray.data.puzzles.ray_dataset import _read_rows
from hrm_ray.data.puzzles.sampler import GroupEpochSampler
from hrm_ray.ray_env import data_task_cpus


def iteration_index(batch: dict[str, np.ndarray], dataset_dir: str, split: str, global_batch_size: int,
                    epochs_per_iter: int, seed: int) -> dict[str, np.ndarray]:
    """Ray Data UDF: iteration numbers -> the (set, example, puzzle) rows of those iterations, in order."""
    sampler = GroupEpochSampler(load_split(dataset_dir, split), global_batch_size, epochs_per_iter, seed)
    parts = [part for it in batch["id"] for part in sampler.indices(int(it))]
    return {"set": np.concatenate([np.full(len(ex), name) for name, ex, _ in parts]),
            "example": np.concatenate([ex for _, ex, _ in parts]),
            "puzzle": np.concatenate([pz for _, _, pz in parts])}


def run_train_dataset(dataset_dir: str, global_batch_size: int, epochs_per_iter: int, iterations: int, seed: int,
                      split: str = "train"):
    """Ray Dataset with columns inputs [L], labels [L] (-100 = no loss), puzzle_identifiers for the run."""
    import ray.data

    # from_items, not range: range's read task takes a whole CPU, which may be more than the workers leave
    return (ray.data.from_items([{"id": i} for i in range(iterations)], override_num_blocks=iterations)
            .map_batches(iteration_index, batch_size=1, batch_format="numpy",
                         fn_kwargs={"dataset_dir": dataset_dir, "split": split,
                                    "global_batch_size": global_batch_size, "epochs_per_iter": epochs_per_iter,
                                    "seed": seed}, num_cpus=data_task_cpus())
            .map_batches(_read_rows, batch_size=global_batch_size, batch_format="numpy",
                         fn_kwargs={"dataset_dir": dataset_dir, "split": split}, num_cpus=data_task_cpus()))


class PuzzleBatchCollate(NumpyBatchCollateFn):
    """`iter_torch_batches` collate: numpy columns -> the model batch (long tensors)."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.array(v, dtype=np.int64)) for k, v in batch.items()}
