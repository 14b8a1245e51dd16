"""Run a puzzle HRM experiment: what `experiments/sudoku.py` and `experiments/arc.py` call.

    python experiments/sudoku.py [--config YAML] [--profile demo|gpu|cluster] [paper flags / overrides ...]

The paper's flag names are accepted (`data_path=...`, `epochs=...`, `lr=...`, `arch=hrm_v1_gated`,
`arch.gate_init_bias=-1.5`, also as `--lr 1e-4`), next to every config flag and dotted path. Storage
and Ray as for the curriculum stages (hrm_ray.experiments.stage). Under `--profile demo` a Sudoku
dataset that does not exist yet is generated (6x6 grids with 20 blanks, each with exactly one solution).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hrm_ray.config import PAPER_FLAGS, Config, build_config
from hrm_ray.console import take_verbose_flag
from hrm_ray.errors import UserError
from hrm_ray.experiments.stage import (
    CLUSTER_PROFILE,
    DEMO_PROFILE,
    STORAGE_ENV,
    parse_stage_args,
    start_ray,
)
from hrm_ray.train.loop import LoopResult
from hrm_ray.train.puzzle_task import PuzzleTask
from hrm_ray.train.ray_trainer import storage_root
from hrm_ray.tune.sweep import Dimension, KnobSpace

# 6x6 Sudoku with 20 blanks (distinct puzzles with one solution each): a CPU learns the grid in minutes and
# most puzzles need 3-6 rounds of constraint propagation, where the HRM's recurrence beats a plain transformer.
DEMO_SUDOKU = {"train_size": 16000, "test_size": 1000, "blanks": 20, "box": (2, 3)}


def load_puzzle_config(config_path: str | Path, profile: str | None, overrides: list[str]) -> Config:
    cfg = build_config(str(config_path), overrides, aliases=PAPER_FLAGS, profile=profile)
    if cfg.task != "puzzle":
        raise UserError(f"{config_path}: task is '{cfg.task}', a puzzle experiment needs task: puzzle")
    if not cfg.ray.storage_path and os.environ.get(STORAGE_ENV) and profile == CLUSTER_PROFILE:
        cfg.ray.storage_path = os.environ[STORAGE_ENV]
    if profile == CLUSTER_PROFILE and not cfg.ray.storage_path:
        raise UserError(f"--profile {CLUSTER_PROFILE}: set --storage_path (s3://, gs:// or a shared mount) or "
                        f"${STORAGE_ENV}: the workers of a multi-node run all need to see the checkpoints")
    return cfg


def ensure_demo_sudoku(cfg: Config, log: Callable[[str], None] = print) -> None:
    from hrm_ray.data.puzzles.demo import build_demo_sudoku

    path = Path(cfg.puzzle.data_path).absolute()
    if not (path / "train" / "dataset.json").is_file():
        log(f"building the demo Sudoku dataset in {path} ({DEMO_SUDOKU})")
        build_demo_sudoku(path, seed=cfg.train.seed, log=log, **DEMO_SUDOKU)
    cfg.puzzle.data_path = str(path)


def run_puzzle(config_path: str | Path, profile: str | None, overrides: list[str], demo_data: bool,
               log: Callable[[str], None] = print) -> tuple[Config, LoopResult]:
    cfg = load_puzzle_config(config_path, profile, overrides)
    if profile == DEMO_PROFILE and demo_data:
        ensure_demo_sudoku(cfg, log)
    cfg.puzzle.data_path = str(Path(cfg.puzzle.data_path).absolute())
    if cfg.ray.num_workers > 0:
        start_ray(cfg)
    from hrm_ray.train.ray_trainer import train

    log(f"puzzle run '{cfg.train.run_name}' ({cfg.arch.name}) in {storage_root(cfg)}, data {cfg.puzzle.data_path}")
    result = train(cfg)
    if not result.already_done:
        val = result.last_val
        log(f"run '{cfg.train.run_name}' finished at step {result.step}/{result.total_steps}: exact accuracy "
            f"{100 * val.get('exact_accuracy', 0.0):.2f}% on {int(val.get('examples', 0))} test examples "
            f"(token accuracy {100 * val.get('accuracy', 0.0):.2f}%)")
    return cfg, result


def puzzle_main(default_config: str | Path, demo_data: bool = False, argv: Sequence[str] | None = None) -> int:
    try:
        run_puzzle(*parse_stage_args(sys.argv[1:] if argv is None else argv, default_config), demo_data=demo_data)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


@dataclass
class PuzzleSearchSpace(KnobSpace):
    """The gated puzzle HRM's knobs for `hrm_ray.tune.sweep`; None leaves a knob at the base value."""
    gate_init_bias: tuple[float, float] | None = (-3.5, -1.0)
    gate_hidden_ratio: tuple[float, ...] | None = (0.125, 0.25, 0.5)
    learning_rate: tuple[float, float] | None = (3e-4, 3e-3)

    def dimensions(self) -> list[Dimension]:
        knobs = [
            Dimension("search_gate_init_bias", "arch.gate_init_bias", "uniform", self.gate_init_bias),
            Dimension("search_gate_hidden_ratio", "arch.gate_hidden_ratio", "choice", self.gate_hidden_ratio,
                      min_value=1e-6),
            Dimension("search_learning_rate", "optim.learning_rate", "loguniform", self.learning_rate),
        ]
        return [d for d in knobs if d.values is not None]


# Trials rank as the task selects its best model: by exact accuracy, higher is better.
SWEEP_METRIC, SWEEP_MODE = f"val_{PuzzleTask.selection_metric}", PuzzleTask.selection_mode


def puzzle_sweep_main(default_config: str | Path, argv: Sequence[str] | None = None) -> int:
    """A Tune + ASHA sweep of the gated puzzle HRM on exact accuracy: trials run `hrm_ray.tune.sweep`'s
    driver (one Ray Train run each) on the base config with `arch=hrm_v1_gated`."""
    parser = argparse.ArgumentParser(description=puzzle_sweep_main.__doc__, allow_abbrev=False)
    parser.add_argument("--config", default=str(default_config))
    parser.add_argument("--profile", default=None)
    parser.add_argument("--name", default="sudoku-gates")
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--max_concurrent_trials", type=int, default=0)
    parser.add_argument("--grace_period", type=int, default=0)
    parser.add_argument("--search_seed", type=int, default=0)
    args, overrides = parser.parse_known_args(take_verbose_flag(list(sys.argv[1:] if argv is None else argv)))
    try:
        from hrm_ray.config import to_dict
        from hrm_ray.tune.sweep import SweepSpec, results_table, run_sweep

        cfg = load_puzzle_config(args.config, args.profile, ["arch=hrm_v1_gated", *overrides])
        if args.profile == DEMO_PROFILE:
            ensure_demo_sudoku(cfg)
        cfg.puzzle.data_path = str(Path(cfg.puzzle.data_path).absolute())
        cfg.ray.num_workers = max(1, cfg.ray.num_workers)   # a trial reports to Tune from a Ray Train worker
        base = PuzzleTask(cfg).cfg                          # steps / val_every resolved: ASHA's max_t and rungs
        spec = SweepSpec(base=to_dict(base), name=args.name, storage=str(Path(storage_root(base), "sweeps").absolute()),
                         space=PuzzleSearchSpace(), num_samples=args.num_samples,
                         max_concurrent_trials=args.max_concurrent_trials, grace_period=args.grace_period,
                         seed=args.search_seed, metric=SWEEP_METRIC, mode=SWEEP_MODE)
        result = run_sweep(spec)
        from rich.console import Console

        Console(highlight=False, soft_wrap=True).print(results_table(result))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
