"""The HRM×LM task in the loop: HRM parameters frozen while the gate is closed, then trained."""
from __future__ import annotations

import pytest
import torch

from hrm_ray.config import build_config
from hrm_ray.train.lm_task import LanguageModelTask, source_counts, source_gates
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import WorkerContext

TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
        "--synthetic_train_size", "256", "--synthetic_val_size", "32", "--batch_size", "8", "--log_steps", "2",
        "--warmup_steps", "0", "--learning_rate", "0.01", "--weight_decay", "0.5"]


class Recorder(LanguageModelTask):
    """Keeps the model the loop trains so the test can look at it."""

    def build_model(self):
        self.model = super().build_model()
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        return self.model


@pytest.mark.timeout(180)
def test_hrm_frozen_while_gate_closed_then_trained(tmp_path):
    cfg = build_config(None, [*TINY, "--steps", "4", "--val_every", "4", "--hrm_gate_warmup_steps", "4",
                              "--run_name", "gate"])
    task = Recorder(resolve_config(cfg))
    run_loop(task.cfg, task, WorkerContext(), LocalReporter(tmp_path / "gate", 0), RunFiles(str(tmp_path / "gate")))
    model = task.model
    hrm_ids = {id(p) for p in model.hrm_parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    assert hrm_ids
    for p in model.parameters():
        changed = not torch.equal(p.detach(), task.initial[names[id(p)]])
        assert changed != (id(p) in hrm_ids), names[id(p)]  # HRM untouched (no update, no decay), rest trained
    # the optimizer state holds nothing for the HRM parameters: they were skipped, not stepped with 0 grads
    from hrm_ray.train.checkpoint import load_checkpoint

    state = load_checkpoint(tmp_path / "gate" / "checkpoint_00000004")
    order = [id(p) for p in model.parameters() if p.dim() >= 2] + [id(p) for p in model.parameters() if p.dim() < 2]
    stepped = set(state["optimizers"][0]["state"])
    assert stepped and all(order[i] not in hrm_ids for i in stepped)

    # gate opens at step 2 of the next run: HRM parameters move
    cfg = build_config(None, [*TINY, "--steps", "4", "--val_every", "4", "--hrm_gate_warmup_steps", "2",
                              "--gate_ramp_steps", "2", "--run_name", "open"])
    task = Recorder(resolve_config(cfg))
    run_loop(task.cfg, task, WorkerContext(), LocalReporter(tmp_path / "open", 0), RunFiles(str(tmp_path / "open")))
    moved = [not torch.equal(p.detach(), task.initial[n]) for n, p in task.model.named_parameters()
             if id(p) in {id(q) for q in task.model.hrm_parameters()}]
    assert any(moved)
    lines = (tmp_path / "open" / "metrics.jsonl").read_text().splitlines()
    import json

    scales = [json.loads(x)["gate_scale"] for x in lines if json.loads(x)["split"] == "train"]
    assert scales == [0.0, 1.0]  # logged at steps 2 (scale of step index 1) and 4


@pytest.mark.timeout(180)
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_are_finite(tmp_path, precision):
    cfg = build_config(None, [*TINY, "--steps", "2", "--val_every", "2", "--mixed_precision", precision,
                              "--run_name", precision])
    task = LanguageModelTask(resolve_config(cfg))
    result = run_loop(task.cfg, task, WorkerContext(), LocalReporter(tmp_path, 0), RunFiles(str(tmp_path)))
    assert result.step == 2 and result.nonfinite_steps == 0 and result.best_val_loss < 10


def test_per_source_gate_is_each_sources_mean_and_the_batch_mean_when_absent():
    source_id = torch.tensor([0, 2, 0, 2, 2])
    gate = torch.tensor([0.1, 0.5, 0.3, 0.6, 0.7])
    gates = source_gates(source_id, gate, source_counts(source_id, 3))
    torch.testing.assert_close(gates, torch.tensor([0.2, 0.44, 0.6]))  # source 1 is absent: the batch's mean
