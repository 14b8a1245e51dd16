"""ARC builder on real ARC-AGI tasks: padding, augmentations, ids, inverse transforms, eval separation."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hrm_ray.data.puzzles.arc import (
    ArcBuildConfig,
    apply_augmentation,
    build_arc_dataset,
    decode_grid,
    encode_grid,
    load_task,
    undo_augmentation,
)
from hrm_ray.data.puzzles.format import load_split

pytestmark = pytest.mark.timeout(60)


def test_grid_encoding_and_inverse_augmentations():
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 10, (3, 5)).astype(np.uint8)
    tokens = encode_grid(grid).reshape(30, 30)
    assert tokens[3, :5].tolist() == [1] * 5 and tokens[:3, 5].tolist() == [1] * 3   # EOS border
    assert tokens[3, 5] == 0 and tokens[10:, :].max() == 0
    assert np.array_equal(decode_grid(tokens), grid)
    full = rng.integers(0, 10, (30, 30)).astype(np.uint8)
    assert np.array_equal(decode_grid(encode_grid(full)), full)
    cmap = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
    for tid in range(8):
        assert np.array_equal(undo_augmentation(apply_augmentation(grid, tid, cmap), tid, cmap), grid)


@pytest.fixture(scope="module")
def task_dirs(real_data, tmp_path_factory):
    """4 real training tasks and 2 more as "evaluation" tasks, copied into a temporary directory."""
    files = sorted((real_data / "arc" / "training").glob("*.json"))[:6]
    root = tmp_path_factory.mktemp("arc")
    (root / "training").mkdir()
    (root / "evaluation").mkdir()
    for i, f in enumerate(files):
        shutil.copy(f, root / ("training" if i < 4 else "evaluation") / f.name)
    return root


@pytest.mark.parametrize("separate", [False, True])
def test_build_arc(task_dirs, tmp_path, separate):
    out = tmp_path / "arc"
    build_arc_dataset(ArcBuildConfig(output_dir=str(out), tasks_dirs=[str(task_dirs / "training")],
                                     eval_tasks_dirs=[str(task_dirs / "evaluation")], num_aug=3,
                                     separate_eval=separate, seed=0), log=lambda *_: None)
    train, test = load_split(out, "train"), load_split(out, "test")
    names = json.loads((out / "identifiers.json").read_text())
    augs = json.loads((out / "augmentations.json").read_text())
    assert names[0] == "<blank>" and len(names) == len(augs) == 1 + 6 * 4
    meta = train.metadata
    assert (meta.vocab_size, meta.seq_len, meta.num_puzzle_identifiers) == (12, 900, 25)
    assert meta.total_groups == (4 if separate else 6) and test.metadata.total_groups == 2
    tr, te = train.sets["all"], test.sets["all"]
    eval_ids = {i for i, a in enumerate(augs) if a and a["task"] in {p.stem for p in (task_dirs / "evaluation").iterdir()}}
    assert set(te.puzzle_identifiers.tolist()) == eval_ids
    assert bool(eval_ids & set(tr.puzzle_identifiers.tolist())) is not separate
    assert np.all(np.diff(tr.group_indices) == 4)     # identity + 3 distinct augmentations per task
    # each test example, decoded and un-augmented with its recorded inverse, is the task's original pair
    for p in range(te.num_puzzles):
        a = augs[int(te.puzzle_identifiers[p])]
        task = load_task(task_dirs / "evaluation" / f"{a['task']}.json")
        inv = np.array(a["inverse_colour_map"], dtype=np.uint8)
        for k, ex in enumerate(range(te.puzzle_indices[p], te.puzzle_indices[p + 1])):
            out_grid = decode_grid(te.labels[ex])
            restored = undo_augmentation(out_grid, a["dihedral"], np.argsort(inv).astype(np.uint8))
            assert np.array_equal(restored, task.test[k][1])
            assert np.array_equal(inv[out_grid], np.asarray(apply_augmentation(task.test[k][1], a["dihedral"],
                                                                                 np.arange(10, dtype=np.uint8))))
    # augmented copies of a task are all different
    first = tr.inputs[tr.puzzle_indices[tr.group_indices[0]]:tr.puzzle_indices[tr.group_indices[1]]]
    assert len({bytes(r) for r in np.asarray(first)}) > 1


def test_arc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ARC task directory not found"):
        build_arc_dataset(ArcBuildConfig(output_dir=str(tmp_path / "o"), tasks_dirs=[str(tmp_path / "none")],
                                         eval_tasks_dirs=[]))
    bad = tmp_path / "t"
    bad.mkdir()
    (bad / "x.json").write_text(json.dumps({"train": [{"input": [[1, 12]], "output": [[1]]}], "test": []}))
    with pytest.raises(ValueError, match=r"x.json train\[0\].input: colours must be 0..9"):
        load_task(bad / "x.json")
