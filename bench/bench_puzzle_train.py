"""Puzzle HRM: training steps/s through TorchTrainer (1 worker, Ray Dataset shard) vs the bare loop
(in-process, the sampler reading the memory map), and evaluation cost per puzzle: the cheap
intermediate evaluation (fixed random subset, large batches) vs the full test set in small batches.

    .venv/bin/python bench/bench_puzzle_train.py [--steps 40] [--hidden 64]

Data: generated Sudoku (hrm_ray.data.puzzles.demo), so it runs anywhere. Steps/s come from the
metrics.jsonl timestamps between the first and the last logged step (start-up excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")


def config(data: Path, save: Path, name: str, workers: int, steps: int, hidden: int):
    from hrm_ray.config import PAPER_FLAGS, build_config

    return build_config(None, [
        "model.name=hrm_v1", f"data_path={data}", f"model.d_model={hidden}", "model.n_heads=4", "model.h_layers=1",
        "model.l_layers=1", f"model.puzzle_emb_ndim={hidden}", "model.halt_max_steps=4", "global_batch_size=32",
        "epochs=10", "optim.optimizer=adam_atan2", "lr=1e-3", "lr_warmup_steps=5", f"train.steps={steps}",
        f"train.val_every={steps}", "train.log_steps=5", "train.eval_subset=32", "train.eval_batch_size=32",
        "train.wandb=off", f"ray.num_workers={workers}", "ray.cpus_per_worker=1", f"--save_dir={save}",
        f"--run_name={name}"], aliases=PAPER_FLAGS)


def steps_per_second(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    first, last = train[0], train[-1]
    return (last["step"] - first["step"]) / (last["time"] - first["time"])


def bench_training(data: Path, tmp: Path, steps: int, hidden: int) -> dict[str, float]:
    from hrm_ray.ray_env import ensure_ray
    from hrm_ray.train.loop import LocalReporter, run_loop
    from hrm_ray.train.puzzle_task import PuzzleTask
    from hrm_ray.train.ray_trainer import train
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.run_files import RunFiles
    from hrm_ray.train.task import WorkerContext

    torch.set_num_threads(1)
    bare_cfg = config(data, tmp, "bare", 0, steps, hidden)
    task = PuzzleTask(resolve_config(bare_cfg))
    run_loop(task.cfg, task, WorkerContext(), LocalReporter(tmp / "bare", 1), RunFiles(str(tmp / "bare")))
    ensure_ray(None, num_cpus=max(os.cpu_count() or 1, 2))
    train(config(data, tmp, "ray", 1, steps, hidden))
    bare, ray_ = steps_per_second(tmp / "bare"), steps_per_second(tmp / "ray")
    return {"bare_steps_per_s": bare, "torchtrainer_steps_per_s": ray_, "torchtrainer_over_bare": ray_ / bare}


def bench_eval(data: Path, hidden: int, subset: int) -> dict[str, float]:
    from hrm_ray.train.puzzle_task import PuzzleTask, eval_rows, eval_subset_batches, run_to_halt
    from hrm_ray.train.resolve import resolve_config

    task = PuzzleTask(resolve_config(config(data, Path(tempfile.gettempdir()), "eval", 0, 1, hidden)))
    head = task.build_model().eval()
    test = task.test

    def timed(rows, batch_size: int) -> tuple[float, int]:
        start, n = time.perf_counter(), 0
        for _, ex, batch in eval_subset_batches(test, rows, batch_size, 0, 1):
            run_to_halt(head, batch)
            n += len(ex)
        return time.perf_counter() - start, n

    full_s, full_n = timed(eval_rows(test, 0, 0), 16)
    cheap_s, cheap_n = timed(eval_rows(test, subset, 0), 256)
    return {"full_eval_s": full_s, "full_examples": full_n, "full_ms_per_puzzle": 1000 * full_s / full_n,
            "cheap_eval_s": cheap_s, "cheap_examples": cheap_n, "cheap_ms_per_puzzle": 1000 * cheap_s / cheap_n,
            "per_puzzle_speedup": (full_s / full_n) / (cheap_s / cheap_n), "per_eval_speedup": full_s / cheap_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--subset", type=int, default=256)
    args = parser.parse_args()
    from hrm_ray.data.puzzles.demo import build_demo_sudoku

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = build_demo_sudoku(tmp / "sudoku", 2000, 2400, 40, log=lambda _: None)
        results = {**bench_eval(data, args.hidden, args.subset), **bench_training(data, tmp, args.steps, args.hidden)}
    print(f"torch threads 1, cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"training: bare loop {results['bare_steps_per_s']:.3f} steps/s | TorchTrainer (1 worker, Ray Data shard) "
          f"{results['torchtrainer_steps_per_s']:.3f} steps/s | ratio {results['torchtrainer_over_bare']:.2f}")
    print(f"evaluation: full test set {results['full_examples']} puzzles, batch 16: {results['full_eval_s']:.1f} s "
          f"({results['full_ms_per_puzzle']:.1f} ms/puzzle) | cheap subset {results['cheap_examples']} puzzles, "
          f"batch 256: {results['cheap_eval_s']:.1f} s ({results['cheap_ms_per_puzzle']:.1f} ms/puzzle) | "
          f"per puzzle x{results['per_puzzle_speedup']:.2f}, per evaluation x{results['per_eval_speedup']:.1f}")


if __name__ == "__main__":
    main()
