"""The config is resolved once, on the driver: `resolve_config` fills what the data decides into a copy, and
no task writes to the config it is built with."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from hrm_ray.config import PAPER_FLAGS, build_config, to_dict
from hrm_ray.errors import UserError
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.ray_trainer import build_task
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import WorkerContext
from tests.test_puzzle_train import TINY as PUZZLE_TINY
from tests.test_puzzle_train import sudoku_dir  # noqa: F401  (the fixture)
from tests.test_train_ray import TINY as LM_TINY
from tests.test_train_ray import make_prepared

LM = [*LM_TINY, "--batch_size", "4", "--eval_batch_size", "8", "--synthetic_train_size", "64",
      "--synthetic_val_size", "8", "--max_val_samples", "8", "--steps", "1", "--val_every", "1"]


def test_lm_vocab_and_paths_are_filled_in_a_copy(tmp_path, monkeypatch):
    data = make_prepared(tmp_path, "arith", 16, 8)
    monkeypatch.chdir(tmp_path)
    given = build_config(None, [*LM, "--dataset", "arith"])
    before = copy.deepcopy(to_dict(given))
    resolved = resolve_config(given)
    assert to_dict(given) == before                           # the caller's config is left as it was
    assert resolved.data.dataset == str(data) and os.path.isabs(resolved.data.dataset)
    assert resolved.model.vocab_size == json.loads((data / "meta.json").read_text())["vocab_size"]
    assert to_dict(resolve_config(resolved)) == to_dict(resolved)   # resolving again changes nothing
    synthetic = resolve_config(build_config(None, LM))
    assert synthetic.model.vocab_size > 0 and synthetic.data.dataset == "synthetic"


def test_a_relative_init_from_is_made_absolute_and_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--init_from: no best-model/"):
        resolve_config(build_config(None, [*LM, "--init_from", "nowhere"]))
    (tmp_path / "weights").mkdir()
    torch.save({}, tmp_path / "weights" / "model.pt")
    assert resolve_config(build_config(None, [*LM, "--init_from", "weights"])).train.init_from == \
        str(tmp_path / "weights")


def test_puzzle_data_fields_batch_and_steps_are_resolved(sudoku_dir):  # noqa: F811
    given = build_config(None, [*PUZZLE_TINY, f"data_path={sudoku_dir}", "global_batch_size=8", "epochs=6",
                                "eval_interval=3", "ray.num_workers=2"], aliases=PAPER_FLAGS)
    resolved = resolve_config(given)
    assert (given.train.steps, given.model.vocab_size) == (0, 0)
    assert (resolved.model.vocab_size, resolved.model.seq_len) == (11, 81)
    # 22 groups: 3 epochs = 66 examples = 8 global batches per evaluation; 8 / 2 workers a batch each
    assert (resolved.train.steps, resolved.train.val_every, resolved.train.batch_size) == (16, 8, 4)
    assert to_dict(resolve_config(resolved)) == to_dict(resolved)


def unchanged_by_a_step(cfg, tmp_path: Path) -> None:
    """Build the task of the resolved `cfg`, train one step with an evaluation: the config is as resolved."""
    resolved = resolve_config(cfg)
    before = copy.deepcopy(to_dict(resolved))
    task = build_task(resolved)
    torch.set_num_threads(1)
    run_loop(resolved, task, WorkerContext(), LocalReporter(tmp_path, 0), RunFiles(str(tmp_path)))
    assert task.cfg is resolved and to_dict(resolved) == before


def test_no_task_writes_to_its_config(tmp_path, sudoku_dir):  # noqa: F811
    unchanged_by_a_step(build_config(None, [*LM, "--run_name", "s"]), tmp_path / "synthetic")
    data = make_prepared(tmp_path, "arith", 16, 8)
    unchanged_by_a_step(build_config(None, [*LM, "--dataset", str(data), "--num_workers", "0"]), tmp_path / "prepared")
    puzzle = build_config(None, [*PUZZLE_TINY, f"data_path={sudoku_dir}", "global_batch_size=8", "epochs=1",
                                 "train.steps=1", "train.val_every=1", "ema=true"], aliases=PAPER_FLAGS)
    unchanged_by_a_step(puzzle, tmp_path / "puzzle")


def test_a_bare_init_from_name_is_a_run_under_the_storage_root_unless_it_exists_here(tmp_path, monkeypatch,
                                                                                    capsys):
    storage, here = tmp_path / "storage", tmp_path / "here"
    for root in (storage, here):
        (root / "stage-a").mkdir(parents=True)
        torch.save({}, root / "stage-a" / "model.pt")
    monkeypatch.chdir(tmp_path)
    flags = [*LM, "--storage_path", str(storage), "--init_from", "stage-a"]
    assert resolve_config(build_config(None, flags)).train.init_from == str(storage / "stage-a")
    assert "--init_from stage-a: the run 'stage-a' under the storage root" in capsys.readouterr().out
    monkeypatch.chdir(here)  # a path of that name here wins, and the note says so
    assert resolve_config(build_config(None, flags)).train.init_from == str(here / "stage-a")
    assert "in the current directory (it exists here" in capsys.readouterr().out
