"""Run a puzzle HRM experiment: what `experiments/sudoku.py` and `experiments/arc.py` call.

    python experiments/sudoku.py [--config YAML] [--profile demo|gpu|cluster] [paper flags / overrides ...]

The paper's flag names are accepted (`data_path=...`, `epochs=...`, `lr=...`, `arch=hrm_v1_gated`,
`H_cycles=3`, also as `--lr 1e-4`), next to every config flag and dotted path. Storage
and Ray as for the curriculum stages (hrm_ray.experiments.stage). Under `--profile demo` a Sudoku
dataset that does not exist yet is generated (6x6 grids with 20 blanks, each with exactly one solution).
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hrm_ray.config import PAPER_FLAGS, Config, build_config
from hrm_ray.errors import UserError
from hrm_ray.experiments.stage import (
    DEMO_PROFILE,
    parse_stage_args,
    pin_storage,
    start_ray,
)
from hrm_ray.storage import built_data_path
from hrm_ray.train.loop import LoopResult
from hrm_ray.train.puzzle_task import PuzzleTask
from hrm_ray.train.run_plan import run_plan
from hrm_ray.train.task_registry import models_of, task_class

# 6x6 Sudoku with 20 blanks (distinct puzzles with one solution each): a CPU learns the grid in minutes and
# most puzzles need 3-6 rounds of constraint propagation, where the HRM's recurrence beats a plain transformer.
DEMO_SUDOKU = {"train_size": 16000, "test_size": 1000, "blanks": 20, "box": (2, 3)}


def load_puzzle_config(config_path: str | Path, profile: str | None, overrides: list[str],
                       log: Callable[[str], None] = print) -> Config:
    cfg = build_config(str(config_path), overrides, aliases=PAPER_FLAGS, profile=profile)
    if not issubclass(task_class(cfg), PuzzleTask):
        raise UserError(f"{config_path}: model.name '{cfg.model.name}' is not a puzzle model (a puzzle experiment "
                        f"needs {', '.join(models_of(PuzzleTask))})")
    pin_storage(cfg, profile, log)
    return cfg


def ensure_demo_sudoku(cfg: Config, log: Callable[[str], None] = print) -> None:
    from hrm_ray.data.puzzles.demo import build_demo_sudoku

    path = Path(built_data_path(cfg.data.dataset, run_plan(cfg).storage_root))
    if not (path / "train" / "dataset.json").is_file():
        log(f"building the demo Sudoku dataset in {path} ({DEMO_SUDOKU})")
        build_demo_sudoku(path, seed=cfg.train.seed, log=log, **DEMO_SUDOKU)
    cfg.data.dataset = str(path)


def run_puzzle(config_path: str | Path, profile: str | None, overrides: list[str], demo_data: bool,
               log: Callable[[str], None] = print) -> tuple[Config, LoopResult]:
    cfg = load_puzzle_config(config_path, profile, overrides, log)
    if profile == DEMO_PROFILE and demo_data:
        ensure_demo_sudoku(cfg, log)
    if not run_plan(cfg).in_process:
        start_ray(cfg)
    from hrm_ray.train.ray_trainer import train

    log(f"puzzle run '{cfg.train.run_name}' ({cfg.model.name}) in {run_plan(cfg).storage_root}, data {cfg.data.dataset}")
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
