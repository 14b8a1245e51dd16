"""The training loop in-process (no Ray): resume, early stopping, non-finite steps, checkpoints, logging."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hrm_ray.config import build_config
from hrm_ray.train.checkpoint import CheckpointStore, load_checkpoint, read_meta
from hrm_ray.train.data_feed import IndexedFeed, indexed_batches
from hrm_ray.train.loop import LocalReporter, NonFiniteLossError, run_loop
from hrm_ray.train.optim import build_optimizer
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import StepOutput, WorkerContext


class ToyTask:
    """Linear regression with dropout (so RNG state matters), plus fault hooks for the tests:
    `crash_at` raises once (a marker file remembers), `exit_at` kills the process once,
    `nan_from` makes every loss from that step NaN, `val_script` replaces validation losses."""

    eval_sum_keys = ("sq_sum", "count")

    def __init__(self, cfg, marker: str = "", crash_at: int = -1, exit_at: int = -1, nan_from: int = -1,
                 val_script: list[float] | None = None, samples: int = 512):
        self.cfg, self.marker = cfg, marker
        self.crash_at, self.exit_at, self.nan_from, self.val_script = crash_at, exit_at, nan_from, val_script
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(samples, 8, generator=g)
        self.y = self.x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(samples, 1, generator=g)
        self.evals = 0

    def ray_datasets(self):
        return {}

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.ReLU(), nn.Linear(16, 1))

    def build_optimizers(self, model):
        return [build_optimizer(model.parameters(), self.cfg.optim)]

    def train_samples(self) -> int:
        return len(self.x)

    def _collate(self, indices):
        return {"x": self.x[indices], "y": self.y[indices]}

    def train_feed(self, ctx: WorkerContext):
        return IndexedFeed(len(self.x), self._collate, self.cfg.train.batch_size, self.cfg.train.seed,
                           ctx.rank, ctx.world_size)

    def val_batches(self, ctx: WorkerContext):
        return indexed_batches(128, self._collate, 64, ctx.rank, ctx.world_size)

    def _fire_once(self) -> bool:
        marker = Path(self.marker)
        if marker.exists():
            return False
        marker.write_text("fired")
        return True

    def forward(self, model, batch, step):
        if step == self.crash_at and self._fire_once():
            raise RuntimeError(f"injected crash at step {step}")
        if step == self.exit_at and self._fire_once():
            import os

            os._exit(1)
        loss = (model(batch["x"]) - batch["y"]).pow(2).mean()
        if 0 <= self.nan_from <= step:
            loss = loss * float("nan")
        return StepOutput(loss, {"mse": loss.detach()}, len(batch["x"]))

    def eval_sums(self, model, batch, step):
        return {"sq_sum": (model(batch["x"]) - batch["y"]).pow(2).sum(), "count": torch.tensor(float(len(batch["x"])))}

    def eval_metrics(self, sums):
        loss = sums["sq_sum"] / sums["count"]
        if self.val_script is not None:
            loss = self.val_script[min(self.evals, len(self.val_script) - 1)]
            self.evals += 1
        return {"loss": loss}

    def frozen_parameters(self, model, step):
        return []

    def step_log(self, step):
        return {}

    def artifacts(self):
        return {"tokenizer.json": b"{}"}


def toy_cfg(tmp_path: Path, *flags: str):
    return build_config(None, ["--steps", "20", "--batch_size", "16", "--val_every", "5", "--log_steps", "1",
                               "--warmup_steps", "3", "--learning_rate", "0.01", "--save_dir", str(tmp_path),
                               "--run_name", "toy", "--wandb", "off", *flags])


def run_toy(tmp_path: Path, task: ToyTask, name: str = "toy", limit: int = 0):
    run_dir = tmp_path / name
    return run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, limit), RunFiles(str(run_dir))), run_dir


def train_losses(run_dir: Path) -> dict[int, float]:
    """Last logged train loss per step (a resumed run re-logs the steps after its checkpoint)."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["split"] == "train":
            out[record["step"]] = record["loss"]
    return out


@pytest.mark.timeout(180)
def test_resume_gives_identical_losses(tmp_path):
    reference, ref_dir = run_toy(tmp_path, ToyTask(toy_cfg(tmp_path)), "ref")
    cfg = toy_cfg(tmp_path)
    with pytest.raises(RuntimeError, match="injected crash"):
        run_toy(tmp_path, ToyTask(cfg, marker=str(tmp_path / "crash"), crash_at=12), "resumed")
    assert read_meta(CheckpointStore(tmp_path / "resumed", 0).latest())["step"] == 10
    resumed, run_dir = run_toy(tmp_path, ToyTask(cfg, marker=str(tmp_path / "crash"), crash_at=12), "resumed")
    assert resumed.step == reference.step == 20
    expected, got = train_losses(ref_dir), train_losses(run_dir)
    assert sorted(got) == list(range(1, 21))
    assert [got[s] for s in range(1, 21)] == [expected[s] for s in range(1, 21)]
    final_ref = load_checkpoint(ref_dir / "checkpoint_00000020")["model"]
    final_res = load_checkpoint(run_dir / "checkpoint_00000020")["model"]
    assert all(torch.equal(final_ref[k], final_res[k]) for k in final_ref)


@pytest.mark.timeout(180)
def test_checkpoint_holds_full_state_and_stored_step_exits(tmp_path, capsys):
    cfg = toy_cfg(tmp_path, "--steps", "10", "--mixed_precision", "none")
    first, run_dir = run_toy(tmp_path, ToyTask(cfg))
    state = load_checkpoint(run_dir / "checkpoint_00000010")
    for key in ("model", "optimizers", "scheduler", "scaler", "rng", "data_position", "step", "best_val_loss"):
        assert key in state
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert state["step"] == 10 and state["data_position"] == [{"epoch": 0, "sample": 160}]  # 10 global batches of 16
    again, _ = run_toy(tmp_path, ToyTask(cfg))
    assert again.already_done and again.step == 10
    assert "already at step 10 >= steps 10" in capsys.readouterr().out


@pytest.mark.timeout(180)
def test_resume_restores_the_saved_lr_schedule(tmp_path, capsys):
    run_toy(tmp_path, ToyTask(toy_cfg(tmp_path, "--steps", "10")))
    saved = load_checkpoint(tmp_path / "toy" / "checkpoint_00000010")["scheduler"]
    assert saved == {"total_steps": 10, "warmup_steps": 3, "kind": "cosine", "min_ratio": 0.1}
    # raised --steps: the run goes on with the schedule it was saved with (at its floor), not a new one
    _, run_dir = run_toy(tmp_path, ToyTask(toy_cfg(tmp_path, "--steps", "14", "--val_every", "4")))
    assert load_checkpoint(run_dir / "checkpoint_00000014")["scheduler"] == saved
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
           if r["split"] == "train"}
    assert lrs[11] == lrs[14] == pytest.approx(0.01 * 0.1)
    assert "schedule continues as saved" in capsys.readouterr().out


@pytest.mark.timeout(180)
def test_early_stopping_compares_with_best_and_respects_grace(tmp_path):
    # evals at 5,10,...: 1.0, 0.5 (best), 0.6, 0.55, 0.7 -> with patience 2, stops at the 4th eval (step 20);
    # the previous-eval rule would never stop (0.55 < 0.6). Grace 12: the eval at step 10 does not count.
    script = [1.0, 0.5, 0.6, 0.55, 0.7, 0.8, 0.9]
    cfg = toy_cfg(tmp_path, "--steps", "40", "--eval_loss_patience", "2", "--patience_grace_steps", "12")
    result, run_dir = run_toy(tmp_path, ToyTask(cfg, val_script=script))
    assert result.stopped_early and result.step == 20 and result.best_val_loss == 0.5
    assert read_meta(run_dir / "checkpoint_00000020")["final"] is True
    # with grace beyond the run, patience never triggers
    cfg = toy_cfg(tmp_path, "--steps", "30", "--eval_loss_patience", "1", "--patience_grace_steps", "100")
    result, _ = run_toy(tmp_path, ToyTask(cfg, val_script=script), "grace")
    assert not result.stopped_early and result.step == 30


class ScoredToyTask(ToyTask):
    """Selected by a scripted accuracy-like `score` (higher is better) instead of the validation loss."""

    selection_metric, selection_mode = "score", "max"

    def __init__(self, cfg, scores: list[float], losses: list[float]):
        super().__init__(cfg, val_script=losses)
        self.scores = scores

    def eval_metrics(self, sums):
        score = self.scores[min(self.evals, len(self.scores) - 1)]
        return {**super().eval_metrics(sums), "score": score}


@pytest.mark.timeout(180)
def test_task_selection_metric_picks_best_model_and_drives_patience(tmp_path):
    # evals at 5..30: score 0, 0, 0.5 (best), 0.5, 0.4, 0.3; losses keep falling. Ties are broken by the
    # lower loss (step 10 beats step 5, step 20 beats step 15); patience 2 stops after steps 25 and 30
    # fail to improve, although the loss improved at both.
    scores, losses = [0.0, 0.0, 0.5, 0.5, 0.4, 0.3, 0.2], [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    cfg = toy_cfg(tmp_path, "--steps", "40", "--eval_loss_patience", "2")
    result, run_dir = run_toy(tmp_path, ScoredToyTask(cfg, scores, losses))
    assert result.stopped_early and result.step == 30
    assert result.selection_metric == "score" and result.best_metric == 0.5 and result.best_val_loss == 0.5
    best = json.loads((run_dir / "best-model" / "meta.json").read_text())
    assert best["step"] == 20 and best["val_score"] == 0.5 and best["selection_metric"] == "score"
    meta = read_meta(run_dir / "checkpoint_00000030")
    assert (meta["selection_metric"], meta["selection_mode"], meta["best_metric"]) == ("score", "max", 0.5)
    assert meta["best_val_loss"] == 0.5 and meta["val_score"] == 0.3
    state = load_checkpoint(run_dir / "checkpoint_00000030")
    assert state["best_metric"] == 0.5 and state["best_metric_loss"] == 0.7 and state["evals_without_improvement"] == 2
    # a finished run reports its stored best without training
    again, _ = run_toy(tmp_path, ScoredToyTask(toy_cfg(tmp_path, "--steps", "30"), scores, losses))
    assert again.already_done and again.best_metric == 0.5 and again.best_val_loss == 0.5


@pytest.mark.timeout(180)
def test_resume_keeps_the_best_selection_score(tmp_path):
    scores, losses = [0.2, 0.6, 0.1, 0.1], [1.0, 0.9, 0.8, 0.7]
    cfg = toy_cfg(tmp_path, "--steps", "10")
    run_toy(tmp_path, ScoredToyTask(cfg, scores, losses))
    resumed, run_dir = run_toy(tmp_path, ScoredToyTask(toy_cfg(tmp_path, "--steps", "20"), scores[2:], losses[2:]))
    assert resumed.step == 20 and resumed.best_metric == 0.6 and resumed.best_val_loss == 0.7
    assert json.loads((run_dir / "best-model" / "meta.json").read_text())["step"] == 10


@pytest.mark.timeout(180)
def test_nonfinite_steps_are_skipped_counted_and_abort(tmp_path):
    cfg = toy_cfg(tmp_path, "--steps", "20", "--max_nonfinite_steps", "4")
    task = ToyTask(cfg, nan_from=11)  # steps 12.. are NaN: 4 in a row at step 15, before its checkpoint
    with pytest.raises(NonFiniteLossError, match="4 non-finite steps in a row"):
        run_toy(tmp_path, task)
    store = CheckpointStore(tmp_path / "toy", 0)
    assert read_meta(store.latest())["step"] == 10  # the last good checkpoint is kept untouched
    records = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if r["split"] == "train"][-1]
    assert last["step"] == 14 and last["nonfinite_steps"] == 3 and last["loss"] == "nan"
    # skipped steps leave the weights as they were
    state = load_checkpoint(store.latest())
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.timeout(180)
def test_checkpoint_limit_keeps_newest_and_final(tmp_path):
    cfg = toy_cfg(tmp_path, "--steps", "23", "--val_every", "5", "--checkpoint_limit", "2")
    run_toy(tmp_path, ToyTask(cfg), limit=2)
    names = sorted(p.name for p in (tmp_path / "toy").glob("checkpoint_*"))
    assert names == ["checkpoint_00000020", "checkpoint_00000023"]
    assert read_meta(tmp_path / "toy" / "checkpoint_00000023")["final"] is True
    # the final checkpoint survives later, newer non-final ones
    store = CheckpointStore(tmp_path / "toy", 1)
    state = load_checkpoint(tmp_path / "toy" / "checkpoint_00000023")
    store.save(state, {"step": 30, "final": False})
    assert sorted(p.name for p in store.checkpoints()) == ["checkpoint_00000023", "checkpoint_00000030"]


@pytest.mark.timeout(180)
def test_metrics_jsonl_and_best_model(tmp_path):
    cfg = toy_cfg(tmp_path, "--steps", "10", "--log_steps", "5")
    run_toy(tmp_path, ToyTask(cfg))
    records = [json.loads(x) for x in (tmp_path / "toy" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in train] == [5, 10] and [r["step"] for r in val] == [5, 10]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mse", "nonfinite_steps"):
        assert math.isfinite(train[0][key])
    best = tmp_path / "toy" / "best-model"
    assert sorted(p.name for p in best.iterdir()) == ["config.yaml", "meta.json", "model.safetensors", "tokenizer.json"]
    meta = json.loads((best / "meta.json").read_text())
    assert meta["val_loss"] == min(r["loss"] for r in val)


@pytest.mark.timeout(180)
def test_init_from_loads_another_runs_best_model(tmp_path):
    run_toy(tmp_path, ToyTask(toy_cfg(tmp_path, "--steps", "10")), "stage_a")
    cfg = toy_cfg(tmp_path, "--steps", "1", "--val_every", "1", "--learning_rate", "1e-12",
                  "--init_from", str(tmp_path / "stage_a"))
    run_toy(tmp_path, ToyTask(cfg), "stage_b")
    best = load_file(tmp_path / "stage_a" / "best-model" / "model.safetensors")
    started = load_checkpoint(tmp_path / "stage_b" / "checkpoint_00000001")["model"]
    for key, value in best.items():
        torch.testing.assert_close(started[key], value)
