"""Puzzle HRM quality bar: the demo profile's HRM (recurrent H/L cycles with ACT) and the Tiny Recursive
Model (`trm_mlp`: one 2-layer MLP-mixer network recursed on an answer and a latent, at the HRM's cycle
counts and half its parameters, EMA on as the TRM's default) against the plain transformer of the same size (`transformer_baseline`: the same embeddings, heads and H_layers + L_layers
blocks, applied once), trained the same steps with the same optimiser settings on the same generated
Sudoku subset, both scored on every held-out test puzzle.

    .venv/bin/python bench/bench_puzzle_quality.py [--profile demo] [--copy_metrics DIR] [--save_dir DIR]
        [overrides ...]

Each model trains in-process (the plain loop, one CPU thread) into a temporary directory; the 95%
interval on exact accuracy treats the test puzzles as a sample of the generator's puzzles (Wilson).
By default the transformer also runs with learned positions (`arch:override:...` in --archs), its
better setting on this task, so the comparison does not rest on the profile's RoPE suiting it less.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "sudoku.yaml"
ARCHS = ("hrm_v1", "trm_mlp:model.h_cycles=2:model.l_cycles=2", "transformer_baseline",
         "transformer_baseline:model.pos_encodings=learned")


def train_one(config: Path, profile: str, overrides: list[str], spec: str, save: Path) -> dict:
    """Train `spec` (an arch name, optionally followed by `:override` items) to the profile's steps."""
    import torch

    from hrm_ray.experiments.puzzle import ensure_demo_sudoku, load_puzzle_config
    from hrm_ray.train.loop import LocalReporter, run_loop
    from hrm_ray.train.puzzle_task import PuzzleTask, wilson_interval
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.run_files import RunFiles
    from hrm_ray.train.task import WorkerContext

    arch, *extra = spec.split(":")
    name = "_".join(x.rsplit(".", 1)[-1].replace("=", "-") for x in [arch, *extra])
    cfg = load_puzzle_config(config, profile, [*overrides, f"arch={arch}", *extra, f"--run_name={name}",
                                               f"--save_dir={save}", "ray.num_workers=0", "train.wandb=off"])
    ensure_demo_sudoku(cfg, log=lambda msg: print(msg, file=sys.stderr))
    task = PuzzleTask(resolve_config(cfg))
    params = sum(p.numel() for p in task.build_model().parameters())
    torch.set_num_threads(1)
    start = time.perf_counter()
    run_dir = save / name
    result = run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, 1), RunFiles(str(run_dir)))
    wall = time.perf_counter() - start
    val = result.last_val
    n = val["examples"]
    low, high = wilson_interval(val["exact_accuracy"] * n, n, population=None)
    return {"arch": spec.replace("model.", ""), "name": name, "params": params, "steps": result.step, "wall_s": wall, "exact": val["exact_accuracy"],
            "low": low, "high": high, "token": val["accuracy"], "halt_steps": val["steps"], "examples": int(n),
            "data": task.cfg.data.dataset, "train_examples": task.train_samples(), "run_dir": run_dir}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--archs", default=",".join(ARCHS),
                        help="comma-separated arch names (each optionally arch:override:...), trained in order")
    parser.add_argument("--copy_metrics", default="", help="copy each run's metrics.jsonl to DIR/<arch>.jsonl")
    parser.add_argument("--save_dir", default="", help="keep the runs in DIR/<name> (default: a temporary "
                                                       "directory), e.g. for bench/bench_puzzle_depth.py")
    args, overrides = parser.parse_known_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="puzzle-quality-") as tmp:
        for spec in args.archs.split(","):
            row = train_one(Path(args.config), args.profile, overrides, spec, Path(args.save_dir or tmp))
            rows.append(row)
            print(f"{row['arch']}: exact {100 * row['exact']:.1f}% token {100 * row['token']:.1f}% in "
                  f"{row['wall_s']:.0f} s", file=sys.stderr, flush=True)
            if args.copy_metrics:
                Path(args.copy_metrics).mkdir(parents=True, exist_ok=True)
                shutil.copy(row["run_dir"] / "metrics.jsonl", Path(args.copy_metrics) / f"{row['name']}.jsonl")

    first = rows[0]
    print(f"Sudoku quality, profile '{args.profile}' {' '.join(overrides)}".rstrip())
    print(f"data {first['data']}: {first['train_examples']} training puzzles, {first['examples']} test puzzles "
          f"(held out); one CPU thread each")
    print(f"{'arch':<48}{'params':>9}{'steps':>7}{'wall s':>8}{'exact acc (95% CI)':>26}{'token acc':>11}"
          f"{'eval segs':>10}")
    for r in rows:
        ci = f"{100 * r['exact']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
        print(f"{r['arch']:<48}{r['params']:>9,}{r['steps']:>7}{r['wall_s']:>8.0f}{ci:>26}"
              f"{100 * r['token']:>10.1f}%{r['halt_steps']:>10.1f}")
    a = rows[0]
    for b in rows[1:]:
        print(f"exact accuracy {a['arch']} - {b['arch']}: {100 * (a['exact'] - b['exact']):+.1f} points "
              f"({'intervals disjoint' if a['low'] > b['high'] or b['low'] > a['high'] else 'intervals overlap'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
