"""`hrm-ray tune`: a Ray Tune sweep of any model family; each trial is a Ray Train run of the base config.

    hrm-ray tune --config experiments/configs/stage_b.yaml --profile demo --name gate-sweep \\
        --num_samples 8 --max_concurrent_trials 2 --steps 300 --num_workers 1 --cpus_per_worker 1

The search space is the config's `tune:` section (dotted paths with a distribution each, hrm_ray.tune.space);
the ranking metric comes from the task (val_loss/min for the LM, val_exact_accuracy/max for puzzles). The
scheduler settings are config flags (`--num_samples --max_t --grace_period --reduction_factor
--max_concurrent_trials --scheduler --search_seed`, or `tune.<field>=value`), as are all other fields
(`--steps` is the runs' length, `--num_workers`/`--use_gpu`/`--cpus_per_worker` size each trial).
Rerunning with the same --name continues an interrupted sweep. experiments/sweep_*.py call `main`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hrm_ray.commands.config_flags import own_options, parse_command_line, take_config_flags
from hrm_ray.config import Config, UnknownFlag
from hrm_ray.errors import UserError
from hrm_ray.storage import join, resolve_root


def configure(parser: argparse.ArgumentParser, default_config: str | None = None, default_name: str = "sweep",
              demo_data: bool = False) -> None:
    """The sweep's own flags; every other token is a config flag (commands/config_flags.py). `demo_data`:
    under `--profile demo`, build the demo Sudoku the config names when it is missing (as
    experiments/sudoku.py does)."""
    parser.add_argument("--config", default=default_config, help="base config YAML of every trial, with a `tune:` "
                                                                 "section (the search space)")
    parser.add_argument("--profile", default=None, help="a profile of the config (demo, gpu, cluster)")
    parser.add_argument("--name", default=default_name, help=f"sweep name: <sweep_dir>/<name>/ (default: {default_name})")
    parser.add_argument("--sweep_dir", default=None,
                        help="where sweeps live (default: <storage root>/sweeps; the storage root is "
                             "--storage_path, else $HRM_RAY_STORAGE, else ~/hrm-ray/runs)")
    parser.add_argument("--no_report", action="store_true", help="skip the plots and report.md")
    parser.set_defaults(demo_data=demo_data)
    take_config_flags(parser)


def load_sweep_config(args: argparse.Namespace) -> Config:
    """The base config of the sweep: the YAML (and profile) with the flags on top, storage and paths resolved
    as a stage script resolves them, the data checked (here, not in every trial)."""
    from hrm_ray.experiments.stage import DEMO_PROFILE, load_stage_config
    from hrm_ray.train.resolve import resolve_config

    if not args.config and args.profile:
        raise UserError("--profile needs --config (profiles are defined in the config YAML)")
    overrides = args.passed_arguments
    if args.config:
        cfg = load_stage_config(args.config, args.profile, overrides)
    else:
        from hrm_ray.config import build_config

        cfg = build_config(None, overrides)
    if args.demo_data and args.profile == DEMO_PROFILE:
        from hrm_ray.experiments.puzzle import ensure_demo_sudoku

        ensure_demo_sudoku(cfg)
    return resolve_config(cfg)  # --init_from, the data: checked here, not in every trial


def build_spec(args: argparse.Namespace):
    """The SweepSpec of the command line: its config's `tune` section over the rest of it."""
    from hrm_ray.train.run_plan import run_plan
    from hrm_ray.tune.sweep import SweepSpec

    cfg = load_sweep_config(args)
    storage = resolve_root(args.sweep_dir)[0] if args.sweep_dir else join(run_plan(cfg).storage_root, "sweeps")
    return SweepSpec.from_config(cfg, args.name, storage)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hrm_ray.tune.sweep import metric_text, results_table, run_sweep

    spec = build_spec(args)
    console = Console(highlight=False, soft_wrap=True)
    result = run_sweep(spec, log=console.print, report=not args.no_report)
    console.print(results_table(result))
    if result.interrupted:
        return 130
    if result.best is not None:
        console.print(f"best trial {result.best.trial_id}: {metric_text(result.best)}; config {result.best_config}")
    errors = [r for r in result.rows if r.status == "ERROR"]
    if errors and len(errors) == len(result.rows):
        raise UserError(f"all {len(errors)} trials failed (trial {errors[0].trial_id}: {errors[0].error})")
    for row in errors:
        console.print(f"[red]trial {row.trial_id} failed: {row.error}[/red]")
    if result.report:
        console.print(f"report: {result.report}")
    return 0


def main(default_config: str | Path, default_name: str, demo_data: bool = False,
         argv: Sequence[str] | None = None) -> int:
    """What experiments/sweep_*.py run: `hrm-ray tune` with their config as the default `--config`."""
    from hrm_ray.console import take_verbose_flag
    from hrm_ray.ray_errors import user_errors_from_ray

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    configure(parser, str(default_config), default_name, demo_data)
    args = parse_command_line(parser, take_verbose_flag(list(sys.argv[1:] if argv is None else argv)))
    try:
        with user_errors_from_ray():
            return run(args)
    except UnknownFlag as exc:
        print(f"error: {exc.among(own_options(parser))}", file=sys.stderr)
        return 2
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
