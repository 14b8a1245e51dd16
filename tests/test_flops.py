"""Training FLOPs per step, counted on a run's first step and written to metrics.jsonl."""
from __future__ import annotations

import json

from hrm_ray.config import build_config
from hrm_ray.train.flops import flops_record
from hrm_ray.train.lm_task import LanguageModelTask
from hrm_ray.train.loop import LocalReporter, run_loop
from hrm_ray.train.metrics import evaluation_body
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import WorkerContext

FLAGS = ["--d_model", "16", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
         "--synthetic_train_size", "64", "--synthetic_val_size", "8", "--log_steps", "2", "--warmup_steps", "0",
         "--steps", "2", "--val_every", "2", "model.hrm.enabled=false"]


def _flops(tmp_path, batch: int) -> list[dict]:
    name = f"b{batch}"
    cfg = build_config(None, [*FLAGS, "--batch_size", str(batch), "--run_name", name])
    task = LanguageModelTask(resolve_config(cfg))
    run_loop(task.cfg, task, WorkerContext(), LocalReporter(tmp_path / name, 0), RunFiles(str(tmp_path / name)))
    records = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["split"] == "flops"]


def test_first_step_flops_are_recorded_and_scale_with_the_batch(tmp_path):
    small, large = _flops(tmp_path, 2), _flops(tmp_path, 4)
    assert len(small) == 1 and small[0]["step"] == 1 and small[0]["flops_per_step"] > 0
    assert small[0]["flops_per_step"] == small[0]["flops_per_rank_step"]  # one worker
    ratio = large[0]["flops_per_step"] / small[0]["flops_per_step"]
    assert 1.8 < ratio < 2.6  # twice the sequences (padded to the longest of each batch, so not exactly 2)


def test_the_console_shows_flops_in_four_significant_digits():
    line = evaluation_body({**flops_record(47_546_752, 2), "loss": 4.59114})
    assert line == "flops_per_step 9.509e+07 | flops_per_rank_step 4.755e+07 | loss 4.5911"
