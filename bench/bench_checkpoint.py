"""Checkpoint save and restore time for the default model (Config defaults, AdamW state filled).

    python bench/bench_checkpoint.py [--repeats 5]

Save = building the state dict (model, optimizer, scheduler, scaler, RNG, data position) and the atomic
write (temp dir + rename); restore = torch.load + load_state_dict into model and optimizer.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hrm_ray.config import Config
from hrm_ray.train.checkpoint import load_checkpoint, rng_state, save_checkpoint
from hrm_ray.train.lm_task import LanguageModelTask
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.task import WorkerContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = Config()
    cfg.train.batch_size = 8
    task = LanguageModelTask(resolve_config(cfg))
    model = task.build_model()
    optimizer = task.build_optimizers(model)[0]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    feed = task.train_feed(WorkerContext())
    out = task.forward(model, feed.next_batch(), 0)
    out.loss.backward()
    optimizer.step()
    params = sum(p.numel() for p in model.parameters())

    saves, loads = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            target = Path(tmp, f"checkpoint_{i:08d}")
            start = time.perf_counter()
            state = {"model": model.state_dict(), "optimizers": [optimizer.state_dict()], "scheduler": {},
                     "scaler": scaler.state_dict(), "rng": rng_state(), "data_position": [feed.state_dict()],
                     "step": i, "best_val_loss": 1.0, "evals_without_improvement": 0, "nonfinite_total": 0}
            save_checkpoint(state, target, {"step": i, "final": False})
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded = load_checkpoint(target)
            model.load_state_dict(loaded["model"])
            optimizer.load_state_dict(loaded["optimizers"][0])
            loads.append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in Path(tmp, "checkpoint_00000000").iterdir())
    print(f"default model: {params:,} parameters (d_model {cfg.model.d_model}), checkpoint {size / 2**20:.1f} MiB")
    print(f"save    median {1000 * statistics.median(saves):8.1f} ms  (min {1000 * min(saves):.1f}, {args.repeats} runs)")
    print(f"restore median {1000 * statistics.median(loads):8.1f} ms  (min {1000 * min(loads):.1f}, {args.repeats} runs)")


if __name__ == "__main__":
    main()
