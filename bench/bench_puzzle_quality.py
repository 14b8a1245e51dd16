"""Puzzle HRM quality bar at equal steps or equal FLOPs: the demo profile's HRM (recurrent H/L cycles with ACT),
the Tiny Recursive Model (`trm_mlp`) and the plain transformer of the same size (`transformer_baseline`), trained
with the same optimiser settings and the same EMA setting (`--ema`, applied to every model) on the same
generated 6x6 Sudoku, over `--seeds`, and scored on three disjoint test splits:

- easy: 20 blanks, grids of the training symmetry classes, no grid shared with training (up to relabelling);
- heldout-class: 20 blanks, grids of symmetry classes no training grid belongs to;
- search: puzzles that naked and hidden singles cannot solve (holes dug while the solution stays unique).

    .venv/bin/python bench/bench_puzzle_quality.py [--seeds 0,1,2] [--budget steps|flops] [--steps N]
        [--ema on|off] [--archs a,b:override,...] [--data_dir DIR] [--save_dir DIR] [--json PATH] [overrides ...]

`--budget steps`: every model trains `--steps` (default: the profile's epochs for the first arch); `--budget
flops`: the first arch (the reference) trains `--steps` and every other model trains as many steps as its
measured training FLOPs per step (`FlopCounterMode` on one forward+backward step, hrm_ray.train.flops) fit in
the reference's total. Each model trains in-process (the plain loop, one CPU thread); only the final weights
are evaluated (no selection on a test split). `--ema on` (the default) evaluates every model's EMA of its
weights with the warm-up decay (train.ema_warmup: min(0.999, (1 + t) / (10 + t)), which follows the weights on a
short run); `--ema off` the final weights themselves. With --save_dir a run already there (same arch, seed, steps
and EMA setting: its name says them) is scored again, not retrained, so a steps and a flops budget share the
reference model's runs. `--json PATH` writes every row.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "configs" / "sudoku.yaml"
DATA = ROOT / "demo_data" / "sudoku-6x6-splits"
ARCHS = ("hrm_v1", "trm_mlp:model.h_cycles=2:model.l_cycles=2", "transformer_baseline:model.pos_encodings=learned")
SPLITS = {"easy": "test", "heldout-class": "test_heldout_class", "search": "test_search"}


def ensure_data(path: Path, train: int, test: int, search: int, seed: int) -> Path:
    """The bench's dataset (built once): train, test, test_heldout_class (20 blanks), test_search (dug to max)."""
    if (path / "test_search" / "dataset.json").is_file():
        return path
    from hrm_ray.data.puzzles.sudoku_generate import GeneratedSudokuConfig, build_generated_sudoku

    start = time.perf_counter()
    build_generated_sudoku(GeneratedSudokuConfig(
        output_dir=str(path), box=(2, 3), train_size=train, test_size=test, heldout_class_size=test,
        search_test_size=search, blanks=20, search_blanks=None, seed=seed, overwrite=True),
        log=lambda msg: print(msg, file=sys.stderr))
    print(f"built {path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return path


def make_config(args, overrides: list[str], spec: str, seed: int, save: Path, steps: int | None):
    from hrm_ray.experiments.puzzle import load_puzzle_config

    arch, *extra = spec.split(":")
    name = "_".join(x.rsplit(".", 1)[-1].replace("=", "-") for x in [arch, *extra]) + f"_s{seed}"
    name += f"_n{steps}_ema-{args.ema}" if steps else ""
    budget = [f"train.steps={steps}", "train.val_every=0"] if steps else []
    cfg = load_puzzle_config(Path(args.config), args.profile, [
        *overrides, f"arch={arch}", *extra, f"data.dataset={args.data_dir}", f"train.seed={seed}",
        f"train.ema={'true' if args.ema == 'on' else 'false'}", "train.ema_warmup=true", *budget, f"--run_name={name}",
        f"--save_dir={save}", "ray.num_workers=0", "train.wandb=off", "train.eval_interval=0"],
        log=lambda _: None)
    return cfg, name


def flops_per_step(cfg) -> tuple[int, int]:
    """(training FLOPs of one step, the steps the config trains), counted on one step of a fresh model."""
    import math

    from hrm_ray.train.flops import counted
    from hrm_ray.train.loop import MetricWindow, Throughput, TrainState, setup, total_steps, train_step
    from hrm_ray.train.metrics import MetricsLogger
    from hrm_ray.train.puzzle_task import PuzzleTask
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.task import WorkerContext

    task = PuzzleTask(resolve_config(cfg))
    ctx = WorkerContext()
    steps = total_steps(task.cfg, task.train_samples())
    parts = setup(task.cfg, task, ctx, steps, None, fresh=True)
    state = TrainState(step=0, best=(-math.inf, math.inf))
    logger = MetricsLogger(None, steps, enabled=False)
    try:
        flops = counted(lambda: train_step(task.cfg, task, parts, ctx, state, MetricWindow(),
                                           Throughput(ctx.device), logger))
    finally:
        parts.feed.close()
    return flops, steps


def train_and_score(cfg, name: str, save: Path) -> dict:
    import torch

    from hrm_ray.infer.puzzle_eval import evaluate_puzzle_run
    from hrm_ray.train.loop import LocalReporter, run_loop
    from hrm_ray.train.puzzle_task import PuzzleTask
    from hrm_ray.train.resolve import resolve_config
    from hrm_ray.train.run_files import RunFiles
    from hrm_ray.train.task import WorkerContext

    run_dir = save / name
    done = run_dir / "bench_run.json"
    if done.is_file():  # trained before with this arch, seed, steps and EMA setting: score it again
        row = json.loads(done.read_text())
    else:
        task = PuzzleTask(resolve_config(cfg))
        params = sum(p.numel() for p in task.build_model().parameters())
        torch.set_num_threads(1)
        start, cpu = time.perf_counter(), time.process_time()
        result = run_loop(task.cfg, task, WorkerContext(), LocalReporter(run_dir, 1), RunFiles(str(run_dir)))
        row = {"params": params, "steps": result.step, "wall_s": time.perf_counter() - start,
               "cpu_s": time.process_time() - cpu}
        done.write_text(json.dumps(row) + "\n")
    scores = {}
    for label, split in SPLITS.items():
        m = evaluate_puzzle_run(run_dir / "best-model", split=split, batch_size=256)
        scores[label] = (m["exact_accuracy"], int(m["examples"]), m["accuracy"])
    return {**row, "scores": scores}


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated arch[:override...]; the first "
                                                                  "is the FLOP reference")
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds, e.g. 0,1,2")
    parser.add_argument("--budget", choices=("steps", "flops"), default="steps")
    parser.add_argument("--steps", type=int, default=0, help="reference steps (0: the profile's epochs)")
    parser.add_argument("--ema", choices=("on", "off"), default="on",
                        help="evaluate every model's EMA of its weights (warm-up decay), or its final weights")
    parser.add_argument("--data_dir", default=str(DATA))
    parser.add_argument("--train_size", type=int, default=16000)
    parser.add_argument("--test_size", type=int, default=1000)
    parser.add_argument("--search_size", type=int, default=200)
    parser.add_argument("--save_dir", default="", help="keep the runs in DIR/<name> (default: a temporary dir)")
    parser.add_argument("--json", default="", help="also write the plan and every row to this JSON file")
    args, overrides = parser.parse_known_args()
    ensure_data(Path(args.data_dir), args.train_size, args.test_size, args.search_size, seed=0)
    seeds = [int(s) for s in args.seeds.split(",")]
    specs = args.archs.split(",")

    with tempfile.TemporaryDirectory(prefix="puzzle-quality-") as tmp:
        save = Path(args.save_dir or tmp)
        plan = {}
        for spec in specs:  # FLOPs per step and the steps each model trains
            cfg, _ = make_config(args, overrides, spec, seeds[0], save / "probe", args.steps or None)
            plan[spec] = flops_per_step(cfg)
        ref_flops, ref_steps = plan[specs[0]]
        steps = {s: ref_steps if args.budget == "steps" else max(1, round(ref_steps * ref_flops / f))
                 for s, (f, _) in plan.items()}
        rows: dict[str, list[dict]] = {s: [] for s in specs}
        for seed in seeds:
            for spec in specs:
                cfg, name = make_config(args, overrides, spec, seed, save, steps[spec])
                row = train_and_score(cfg, name, save)
                rows[spec].append(row)
                print(f"{spec} seed {seed}: " + ", ".join(f"{k} {100 * v[0]:.1f}%" for k, v in row["scores"].items())
                      + f" in {row['wall_s']:.0f} s", file=sys.stderr, flush=True)

    n = {k: v[1] for k, v in next(iter(rows.values()))[0]["scores"].items()}
    print(f"Sudoku 6x6 quality, profile '{args.profile}', budget {args.budget} (reference {specs[0]}: {ref_steps} "
          f"steps), EMA {args.ema}{' (warm-up decay)' if args.ema == 'on' else ''} for every model, seeds "
          f"{args.seeds} {' '.join(overrides)}".rstrip())
    print("test splits: " + ", ".join(f"{k} {c} puzzles" for k, c in n.items()) + f"; data {args.data_dir}")
    head = "".join(f"{k + ' exact %':>22}" for k in SPLITS)
    print(f"{'arch':<52}{'params':>9}{'steps':>7}{'GFLOP/step':>11}{'TFLOP total':>12}{'wall s':>8}{head}")
    for spec in specs:
        r = rows[spec]
        flops = plan[spec][0]
        cells = "".join(f"{mean_sd([x['scores'][k][0] for x in r]):>22}" for k in SPLITS)
        wall = statistics.mean(x["wall_s"] for x in r)
        print(f"{spec.replace('model.', ''):<52}{r[0]['params']:>9,}{steps[spec]:>7}{flops / 1e9:>11.2f}"
              f"{flops * steps[spec] / 1e12:>12.2f}{wall:>8.0f}{cells}")
    print("each seed (exact % / token %):")
    for spec in specs:
        for seed, r in zip(seeds, rows[spec], strict=True):
            print(f"  {spec.replace('model.', ''):<50} seed {seed}: "
                  + ", ".join(f"{k} {100 * v[0]:.1f} / {100 * v[2]:.1f}" for k, v in r["scores"].items()))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "budget": args.budget, "ema": args.ema, "seeds": seeds, "profile": args.profile, "overrides": overrides,
            "data_dir": args.data_dir, "test_sizes": n, "reference": specs[0], "reference_steps": ref_steps,
            "models": {spec: {"flops_per_step": plan[spec][0], "steps": steps[spec], "runs": [
                {"seed": seed, **r} for seed, r in zip(seeds, rows[spec], strict=True)]} for spec in specs}},
            indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
