"""Ray Train overhead: steps/s of the same model and batches through TorchTrainer (1 CPU worker)
vs the bare loop in-process, measured side by side in one run. Startup is reported separately.

    python bench/bench_ray_overhead.py [--steps 120] [--threads 2]

Steady-state rate = train steps between the first and last logged window / wall time between them
(metrics.jsonl timestamps), so model build, data build, Ray start-up and the final eval are excluded.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

from hrm_ray.config import build_config  # noqa: E402
from hrm_ray.train.lm_task import LanguageModelTask  # noqa: E402
from hrm_ray.train.loop import LocalReporter, run_loop  # noqa: E402
from hrm_ray.train.resolve import resolve_config  # noqa: E402
from hrm_ray.train.run_files import RunFiles  # noqa: E402
from hrm_ray.train.task import WorkerContext  # noqa: E402


def steady_rate(run_dir: Path) -> tuple[float, float]:
    """(steps/s between the first and last train record, time of the first record)."""
    train = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["split"] == "train"]
    first, last = train[0], train[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"]), first["time"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", default="experiments/configs/demo_arithmetic.yaml")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    flags = ["--steps", str(args.steps), "--log_steps", "10", "--val_every", str(args.steps), "--wandb", "off",
             "--save_dir", str(root), "--cpus_per_worker", str(args.threads), "--num_workers", "1"]

    torch.set_num_threads(args.threads)
    cfg = build_config(args.config, [*flags, "--run_name", "bare"])
    start = time.time()
    task = LanguageModelTask(resolve_config(cfg))
    run_loop(task.cfg, task, WorkerContext(), LocalReporter(root / "bare", 1), RunFiles(str(root / "bare")))
    bare_rate, bare_first = steady_rate(root / "bare")
    bare_startup = bare_first - start

    import ray

    from hrm_ray.train.ray_trainer import train

    ray_start = time.time()
    ray.init(num_cpus=args.threads + 1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init_s = time.time() - ray_start
    cfg = build_config(args.config, [*flags, "--run_name", "ray"])
    start = time.time()
    train(cfg)
    ray_rate, ray_first = steady_rate(root / "ray")
    ray_startup = ray_first - start
    ray.shutdown()

    print(f"model: {args.config}, {args.steps} steps, {args.threads} threads each, CPU")
    print(f"bare loop in-process : {bare_rate:8.2f} steps/s   (start-up to first window {bare_startup:6.2f} s)")
    print(f"TorchTrainer 1 worker: {ray_rate:8.2f} steps/s   (start-up to first window {ray_startup:6.2f} s, "
          f"plus ray.init {init_s:.2f} s)")
    print(f"ratio ray/bare       : {ray_rate / bare_rate:8.3f}   (goal >= 0.9)")
    print(f"extra start-up       : {ray_startup - bare_startup + init_s:8.2f} s")


if __name__ == "__main__":
    main()
