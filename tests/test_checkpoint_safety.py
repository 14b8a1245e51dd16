"""Checkpoints are data, never code: a pickle that would run a command is refused, with one error line, in
every place a checkpoint is read (train --init_from, resume, eval, generate, report --depths, puzzle eval;
local and s3://); new checkpoints are safetensors + a weights-only state; old pickled runs still load."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hrm_ray import storage
from hrm_ray.cli import main
from hrm_ray.config import PAPER_FLAGS, build_config, save_yaml
from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset
from hrm_ray.errors import UserError
from hrm_ray.train import ray_trainer
from hrm_ray.train.checkpoint import (
    CheckpointStore,
    load_checkpoint,
    load_model_weights,
    read_meta,
    save_weights,
)
from hrm_ray.train.resolve import resolve_config
from tests.test_faults_train import TINY, error_lines
from tests.test_generate import write_run
from tests.test_train_loop import ToyTask, run_toy, toy_cfg, train_losses

pytestmark = pytest.mark.usefixtures("one_thread")


class RunsACommand:
    """Unpickling this calls os.system: it touches `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, marker: Path, payload: dict | None = None) -> Path:
    """A `torch.save` file at `path` that looks like weights (or `payload`) and runs a command when unpickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**(payload or {"w": torch.zeros(2)}), "evil": RunsACommand(marker)}, path)
    return path


def assert_refused(code: int, capsys, marker: Path, file: str) -> None:
    lines = error_lines(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "refused: it contains code" in lines[0] and file in lines[0], lines[0]
    assert not marker.exists()


def test_the_planted_pickle_would_run_its_command(tmp_path):
    """The test's own check: loaded as pickles used to be, the file runs its command."""
    marker = tmp_path / "ran"
    torch.load(plant(tmp_path / "model.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.fixture
def lm_run(tmp_path):
    """An LM run (best-model/ and checkpoint_00000010/) with a planted model.pt and state.pt."""
    write_run(tmp_path)
    run, marker = tmp_path / "demo", tmp_path / "ran"
    plant(run / "best-model" / "model.pt", marker)
    plant(run / "checkpoint_00000010" / "state.pt", marker, {"step": 10})
    return run, marker


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command, target", [
    (["eval", "--dataset", "synthetic", "--max_samples", "2"], "best-model"),
    (["eval", "--dataset", "synthetic", "--max_samples", "2"], "checkpoint_00000010"),
    (["generate", "--prompt", "1 + 2", "--max_new_tokens", "2"], "best-model"),
    (["generate", "--prompt", "1 + 2", "--max_new_tokens", "2"], "checkpoint_00000010"),
])
def test_eval_and_generate_refuse_a_pickle_with_code(lm_run, capsys, command, target):
    run, marker = lm_run
    assert_refused(main([*command, "--checkpoint", str(run / target)]), capsys, marker, str(run / target))


@pytest.mark.timeout(60)
def test_train_init_from_refuses_before_anything_starts(lm_run, tmp_path, capsys, monkeypatch):
    run, marker = lm_run
    started = []
    monkeypatch.setattr(ray_trainer, "start_ray", lambda *a, **k: started.append(a))
    argv = ["train", "--init_from", str(run), "--save_dir", str(tmp_path / "runs"), "--run_name", "r",
            "--num_workers", "1", "--steps", "2", *TINY]
    assert_refused(main(argv), capsys, marker, "best-model/model.pt")
    assert not started and not (tmp_path / "runs" / "r").exists()


@pytest.mark.timeout(60)
def test_init_from_and_eval_from_a_bucket_refuse(s3_bucket, lm_run, capsys):
    run, marker = lm_run
    storage.upload(run, f"{s3_bucket}/runs/demo")
    with pytest.raises(UserError, match="refused: it contains code"):
        load_model_weights(f"{s3_bucket}/runs/demo")  # what a worker loads for --init_from s3://...
    assert_refused(main(["eval", "--checkpoint", f"{s3_bucket}/runs/demo/best-model", "--max_samples", "2"]),
                   capsys, marker, "model.pt")


@pytest.mark.timeout(60)
def test_an_old_run_in_a_bucket_loads_as_data_and_stays_as_it_is(s3_bucket, tmp_path, capsys):
    _, model = write_run(tmp_path)  # best-model/model.pt, checkpoint_00000010/state.pt: pickles of older versions
    storage.upload(tmp_path / "demo", f"{s3_bucket}/runs/demo")
    weights = load_model_weights(f"{s3_bucket}/runs/demo")
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert "is a pickled checkpoint of an older version: read as data only" in capsys.readouterr().out
    assert "model.safetensors" not in storage.list_names(f"{s3_bucket}/runs/demo/best-model")


def planted_checkpoint(run_dir: Path, step: int, marker: Path) -> Path:
    """A complete checkpoint by its meta.json (sizes match), whose state.pt runs a command."""
    directory = run_dir / f"checkpoint_{step:08d}"
    plant(directory / "state.pt", marker, {"step": step})
    save_weights({"w": torch.zeros(2)}, directory / "model.safetensors")
    meta = {"step": step, "final": False, "best_val_loss": 1.0, "state_bytes": (directory / "state.pt").stat().st_size,
            "model_bytes": (directory / "model.safetensors").stat().st_size}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["local", "s3"])
def test_resume_refuses_a_planted_newest_checkpoint(tmp_path, request, where):
    marker = tmp_path / "ran"
    if where == "s3":
        root = request.getfixturevalue("s3_bucket")
        local = planted_checkpoint(tmp_path / "staging", 10, marker)
        storage.upload(local, f"{root}/toy/{local.name}")
        run_dir = f"{root}/toy"
    else:
        run_dir = str(planted_checkpoint(tmp_path / "toy", 10, marker).parent)
    assert CheckpointStore(run_dir, 0).names() == ["checkpoint_00000010"]
    with pytest.raises(UserError) as caught:
        load_checkpoint(CheckpointStore(run_dir, 0).latest())  # what a resuming run reads first
    assert "refused: it contains code" in str(caught.value) and "\n" not in str(caught.value)
    if where == "local":
        with pytest.raises(UserError, match="refused: it contains code"):
            run_toy(tmp_path, ToyTask(toy_cfg(tmp_path)))
    assert not marker.exists()


def tiny_sudoku(real_data: Path, tmp: Path) -> Path:
    """An hrm-ray Sudoku dataset of 4 training and 2 test puzzles (vocab_size 11, seq_len 81, one puzzle id)."""
    lines = [ln for ln in (real_data / "sudoku" / "top95.txt").read_text().splitlines() if ln.strip()][:6]
    (tmp / "p.txt").write_text("\n".join(lines) + "\n")
    build_sudoku_dataset(SudokuBuildConfig(output_dir=str(tmp / "data"), puzzles=str(tmp / "p.txt"), test_size=2,
                                           workers=1), log=lambda _: None)
    return tmp / "data"


@pytest.fixture(scope="module")
def sudoku(real_data: Path, tmp_path_factory) -> Path:
    return tiny_sudoku(real_data, tmp_path_factory.mktemp("sudoku"))


def puzzle_run(run: Path, data: Path, marker: Path) -> Path:
    """A puzzle run directory: best-model/ (config.yaml + a planted model.pt) and a checkpoint with a planted
    state.pt and no config.yaml (its config is read from the state)."""
    cfg = build_config(None, ["model.name=hrm_v1", f"data_path={data}", "model.d_model=16", "model.n_heads=2",
                              "model.h_layers=1", "model.l_layers=1", "model.puzzle_emb_ndim=16",
                              "global_batch_size=4", "epochs=1", "train.wandb=off"], aliases=PAPER_FLAGS)
    plant(run / "best-model" / "model.pt", marker)
    save_yaml(resolve_config(cfg), run / "best-model" / "config.yaml")
    planted_checkpoint(run, 4, marker)
    return run


@pytest.mark.timeout(120)
def test_puzzle_eval_and_depth_report_refuse(sudoku, tmp_path, capsys):
    marker = tmp_path / "ran"
    run = puzzle_run(tmp_path / "puzzle", sudoku, marker)
    for target, file in ((run / "best-model", "model.pt"), (run / "checkpoint_00000004", "state.pt")):
        assert_refused(main(["eval", "--checkpoint", str(target), "--dataset", str(sudoku)]), capsys, marker, file)
    assert_refused(main(["report", str(run), "--depths", "1", "--out", str(tmp_path / "report")]), capsys, marker,
                   "model.pt")
    assert not (tmp_path / "report").exists()


def test_damaged_weights_are_one_line(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(UserError, match=r"^cannot read .*model.safetensors: [^\n]*$"):
        load_model_weights(tmp_path)


@pytest.mark.timeout(120)
def test_new_checkpoints_are_safetensors_and_a_plain_state(tmp_path):
    run_toy(tmp_path, ToyTask(toy_cfg(tmp_path, "--steps", "10")))
    checkpoint = tmp_path / "toy" / "checkpoint_00000010"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["meta.json", "model.safetensors", "state.pt"]
    state = torch.load(checkpoint / "state.pt", weights_only=True)  # no extra type allowed in: plain data
    assert "model" not in state and isinstance(state["rng"]["numpy"]["keys"], torch.Tensor)
    best = load_file(tmp_path / "toy" / "best-model" / "model.safetensors")
    assert set(best) == set(load_file(checkpoint / "model.safetensors")) == {"0.weight", "0.bias", "3.weight", "3.bias"}


def to_old_format(checkpoint: Path) -> None:
    """Rewrite a checkpoint as older versions wrote it: one pickled state.pt with the weights inside and
    numpy's RNG state as numpy arrays."""
    state = load_checkpoint(checkpoint)
    numpy_state = state["rng"]["numpy"]
    state["rng"]["numpy"] = (numpy_state["algorithm"], numpy_state["keys"].numpy().astype("uint32"),
                             numpy_state["pos"], numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    torch.save(state, checkpoint / "state.pt")
    (checkpoint / "model.safetensors").unlink()
    meta = {k: v for k, v in read_meta(checkpoint).items() if k != "model_bytes"}
    (checkpoint / "meta.json").write_text(json.dumps({**meta, "state_bytes": (checkpoint / "state.pt").stat().st_size}))


@pytest.mark.timeout(180)
def test_an_old_pickled_run_resumes_bit_identically_and_its_model_pt_is_converted(tmp_path, capsys):
    cfg = toy_cfg(tmp_path)
    _, ref_dir = run_toy(tmp_path, ToyTask(cfg), "ref")
    with pytest.raises(RuntimeError, match="injected crash"):
        run_toy(tmp_path, ToyTask(cfg, marker=str(tmp_path / "crash"), crash_at=12), "old")
    old = tmp_path / "old"
    to_old_format(old / "checkpoint_00000010")
    best = old / "best-model"

    run_toy(tmp_path, ToyTask(cfg, marker=str(tmp_path / "crash"), crash_at=12), "old")
    assert re.search(r"note: .*checkpoint_00000010/state.pt is a checkpoint of an older version", capsys.readouterr().out)
    expected, got = train_losses(ref_dir), train_losses(old)
    assert [got[s] for s in range(1, 21)] == [expected[s] for s in range(1, 21)]

    torch.save(load_file(best / "model.safetensors"), best / "model.pt")  # the resumed run's, as once written
    (best / "model.safetensors").unlink()
    weights = load_model_weights(old)
    assert "converted to model.safetensors beside it" in capsys.readouterr().out
    converted = load_file(best / "model.safetensors")
    assert set(converted) == set(weights) and all(torch.equal(converted[k], weights[k]) for k in weights)
