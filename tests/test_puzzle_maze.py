"""Maze builder on generated mazes in the paper's CSV layout."""
from __future__ import annotations

import numpy as np
import pytest

from hrm_ray.data.puzzles.format import load_split
from hrm_ray.data.puzzles.maze import CHARSET, MazeBuildConfig, build_maze_dataset, generate_maze, write_csv

pytestmark = pytest.mark.timeout(60)
WALL, OPEN, START, GOAL, PATH = (CHARSET.index(c) + 1 for c in CHARSET)


def test_build_maze(tmp_path):
    rng = np.random.default_rng(0)
    write_csv(tmp_path / "train.csv", [generate_maze(11, rng) for _ in range(6)])
    write_csv(tmp_path / "test.csv", [generate_maze(11, rng) for _ in range(3)])
    out = tmp_path / "maze"
    build_maze_dataset(MazeBuildConfig(output_dir=str(out), source_csv=str(tmp_path / "train.csv"),
                                       test_csv=str(tmp_path / "test.csv"), aug=True, subsample_size=4),
                       log=lambda *_: None)
    train, test = load_split(out, "train"), load_split(out, "test")
    assert (train.metadata.vocab_size, train.metadata.seq_len, train.metadata.total_groups) == (6, 121, 4)
    tr = train.sets["all"]
    assert tr.num_examples == 32 and np.all(np.diff(tr.group_indices) == 8)
    assert test.sets["all"].num_examples == 3
    for x, y in zip(np.asarray(tr.inputs), np.asarray(tr.labels), strict=True):
        assert not (x == PATH).any() and (y == PATH).any()
        assert np.array_equal(x == WALL, y == WALL)            # same maze, path drawn in the answer
        assert (x == START).sum() == (x == GOAL).sum() == 1
    group = np.asarray(tr.inputs[:8]).reshape(8, 11, 11)
    assert np.array_equal(np.rot90(group[0]), group[1])         # dihedral augmentation


def test_maze_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("source,question,answer,rating\nx,#  X,#  X,0\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: characters \['X'\]"):
        build_maze_dataset(MazeBuildConfig(output_dir=str(tmp_path / "o"), source_csv=str(tmp_path / "bad.csv"),
                                           test_csv=str(tmp_path / "bad.csv")))
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="--test-csv is required"):
        build_maze_dataset(MazeBuildConfig(output_dir=str(tmp_path / "o"), source_csv=str(tmp_path / "bad.csv")))
