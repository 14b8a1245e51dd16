"""Puzzle dataset format (round trip, validation errors) and group-based epoch sampling."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata, load_split, write_split
from hrm_ray.data.puzzles.sampler import GroupEpochSampler, eval_batches, num_iterations

pytestmark = pytest.mark.timeout(60)


def _arrays() -> dict[str, np.ndarray]:
    """5 groups; group g has g % 2 + 1 puzzles; puzzle p has p % 3 + 1 examples; row value = example index."""
    puzzles_per_group = [g % 2 + 1 for g in range(5)]
    n_puzzles = sum(puzzles_per_group)
    sizes = [p % 3 + 1 for p in range(n_puzzles)]
    n = sum(sizes)
    rows = np.arange(n, dtype=np.uint8)[:, None].repeat(4, 1) + 1
    return {"inputs": rows, "labels": rows.copy(), "puzzle_identifiers": np.arange(n_puzzles, dtype=np.int32) + 1,
            "puzzle_indices": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
            "group_indices": np.concatenate([[0], np.cumsum(puzzles_per_group)]).astype(np.int32)}


def _meta(**kw) -> PuzzleDatasetMetadata:
    base = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=40, seq_len=4,
                num_puzzle_identifiers=8, total_groups=5, mean_puzzle_examples=2.0, sets=["all"])
    base.update(kw)
    return PuzzleDatasetMetadata(**base)


@pytest.fixture
def dataset(tmp_path):
    write_split(tmp_path, "train", {"all": _arrays()}, _meta())
    return tmp_path


def test_round_trip_memory_mapped(dataset):
    split = load_split(dataset, "train")
    s = split.sets["all"]
    assert isinstance(s.inputs, np.memmap) and isinstance(s.labels, np.memmap)
    assert not isinstance(s.puzzle_indices, np.memmap)
    for k, v in _arrays().items():
        assert np.array_equal(getattr(s, k), v)
    assert split.metadata == _meta()
    assert s.example_puzzles(0, 4).tolist() == [0, 1, 1, 2]


def test_validation_errors_name_the_file(dataset, tmp_path):
    bad = _arrays()
    bad["puzzle_indices"] = bad["puzzle_indices"][::-1].copy()
    with pytest.raises(ValueError, match=r"all__puzzle_indices.npy: must rise"):
        write_split(tmp_path / "x", "train", {"all": bad}, _meta())
    bad = _arrays()
    bad["group_indices"][-1] += 1
    with pytest.raises(ValueError, match=r"all__group_indices.npy"):
        write_split(tmp_path / "x", "train", {"all": bad}, _meta())
    with pytest.raises(ValueError, match=r"all__inputs.npy: shape"):
        write_split(tmp_path / "x", "train", {"all": _arrays()}, _meta(seq_len=5))
    (dataset / "train" / "all__labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="all__labels.npy"):
        load_split(dataset, "train")
    meta = json.loads((dataset / "train" / "dataset.json").read_text())
    del meta["seq_len"]
    (dataset / "train" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="missing field.*seq_len"):
        load_split(dataset, "train")
    with pytest.raises(FileNotFoundError, match="split not found"):
        load_split(dataset, "val")


def _group_of(example: int) -> int:
    a = _arrays()
    puzzle = np.searchsorted(a["puzzle_indices"], example, side="right") - 1
    return int(np.searchsorted(a["group_indices"], puzzle, side="right") - 1)


def test_one_member_per_group_per_epoch(dataset):
    split = load_split(dataset, "train")
    sampler = GroupEpochSampler(split, global_batch_size=1, epochs_per_iter=3, seed=0)
    idx = list(sampler.indices(0))
    # batch size 1: each group contributes exactly one example (its puzzle truncated) per epoch
    assert len(idx) == 15
    for epoch in range(3):
        groups = [_group_of(int(ex[0])) for _, ex, _ in idx[epoch * 5:(epoch + 1) * 5]]
        assert sorted(groups) == list(range(5))
    for _, ex, pz in idx:   # the puzzle index matches the example's owner
        assert split.sets["all"].example_puzzles(int(ex[0]), int(ex[0]) + 1)[0] == pz[0]


def test_batches_full_deterministic_and_sharded(dataset):
    split = load_split(dataset, "train")
    a = list(GroupEpochSampler(split, 4, 2, seed=7).indices(3))
    b = list(GroupEpochSampler(split, 4, 2, seed=7).indices(3))
    c = list(GroupEpochSampler(split, 4, 2, seed=8).indices(3))
    assert all(len(ex) == 4 for _, ex, _ in a)        # incomplete last batch dropped
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c, strict=False))
    shards = [list(GroupEpochSampler(split, 4, 2, seed=7, rank=r, world_size=2).indices(3)) for r in range(2)]
    for step, (_, ex, _) in enumerate(a):
        assert np.array_equal(np.concatenate([shards[0][step][1], shards[1][step][1]]), ex)
    total = sum(len(ex) for _, ex, _ in a)
    assert total <= 2 * int(_arrays()["puzzle_indices"][-1])
    batch = next(GroupEpochSampler(split, 4, 2, seed=7).batches(3))
    assert batch["inputs"].shape == (4, 4) and str(batch["inputs"].dtype) == "torch.int64"
    assert batch["inputs"][:, 0].tolist() == (a[0][1] + 1).tolist()
    with pytest.raises(ValueError, match="multiple of the number of workers"):
        GroupEpochSampler(split, 5, 1, world_size=2)


def test_epochs_must_be_a_multiple_of_eval_interval():
    assert num_iterations(20, 5) == 4 and num_iterations(20, None) == 1
    with pytest.raises(ValueError, match=r"epochs \(20\) must be a multiple of eval_interval \(3\)"):
        num_iterations(20, 3)


def test_eval_batches_cover_everything_once_with_padding(dataset):
    split = load_split(dataset, "train")
    n = split.sets["all"].num_examples
    seen = Counter()
    for _, batch, real in eval_batches(split, global_batch_size=4, rank=0, world_size=1):
        assert batch["inputs"].shape == (4, 4)
        seen.update(batch["inputs"][:real, 0].tolist())
        if real < 4:
            assert (batch["labels"][real:] == -100).all() and (batch["inputs"][real:] == 0).all()
    assert seen == Counter(range(1, n + 1))
    ids = next(eval_batches(split, 4))[1]["puzzle_identifiers"].tolist()
    assert ids == [1, 2, 2, 3]
