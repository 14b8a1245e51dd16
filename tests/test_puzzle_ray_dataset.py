"""A puzzle split as a Ray Dataset: the sampler's rows, streamed for sharded training."""
from __future__ import annotations

import numpy as np
import pytest

from hrm_ray.data.puzzles.format import load_split
from hrm_ray.data.puzzles.ray_dataset import eval_dataset, train_dataset
from hrm_ray.data.puzzles.sampler import GroupEpochSampler
from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset

pytestmark = pytest.mark.timeout(120)


def test_ray_dataset_matches_sampler(ray_session, real_data, tmp_path):
    out = tmp_path / "sd"
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(out), puzzles=str(real_data / "sudoku" / "top95.txt"),
                                           test_size=10, num_aug=2, workers=1), log=lambda *_: None)
    ds = train_dataset(out, global_batch_size=16, epochs_per_iter=2, iteration=1, seed=3).materialize()
    rows = ds.take_all()
    split = load_split(out, "train")
    expected = np.concatenate([ex for _, ex, _ in GroupEpochSampler(split, 16, 2, seed=3).indices(1)])
    assert len(rows) == len(expected) == 2 * 85 // 16 * 16
    got = sorted(tuple(r["inputs"].tolist()) for r in rows)
    want = sorted(tuple(x.tolist()) for x in np.asarray(split.sets["all"].inputs)[expected].astype(np.int64))
    assert got == want
    assert all(r["labels"].min() >= 2 and r["puzzle_identifiers"] == 0 for r in rows[:5])
    batches = list(ds.iter_torch_batches(batch_size=8, drop_last=True))   # what a Train worker's shard does
    assert len(batches) == len(rows) // 8 and batches[0]["inputs"].shape == (8, 81)
    assert eval_dataset(out, "test").count() == 10
