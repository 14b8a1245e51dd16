"""`hrm-ray tune`: sweep gate_init_bias, halting_weight, the gate warmup (and the learning rate) with Ray
Tune and ASHA; each trial is a Ray Train run of the base config.

    hrm-ray tune --config experiments/configs/stage_b.yaml --profile demo --name gate-sweep \\
        --num_samples 8 --max_concurrent_trials 2 --steps 300 --num_workers 1 --cpus_per_worker 1

Config fields are flags as in `hrm-ray train` (`--steps` is ASHA's max_t, `--num_workers`/`--use_gpu`/
`--cpus_per_worker` size each trial). Rerunning with the same --name continues an interrupted sweep.
"""
from __future__ import annotations

import argparse
import os

from hrm_ray.commands.train import add_config_flags
from hrm_ray.config import to_dict
from hrm_ray.errors import UserError
from hrm_ray.train.run_files import is_remote, join

TUNE_FLAGS = ("config", "profile", "name", "sweep_dir", "num_samples", "max_concurrent_trials", "grace_period",
              "reduction_factor", "scheduler", "search_seed", "search_gate_init_bias", "search_halting_weight",
              "search_gate_warmup", "search_learning_rate", "no_report")


def configure(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    parser.allow_abbrev = False
    parser.add_argument("--config", default=default_config, help="base config YAML of every trial")
    parser.add_argument("--profile", default=None, help="a profile of the config (demo, gpu, cluster)")
    parser.add_argument("--name", default="sweep", help="sweep name: <sweep_dir>/<name>/ (default: sweep)")
    parser.add_argument("--sweep_dir", default=None,
                        help="where sweeps live (default: <storage_path or save_dir>/sweeps)")
    parser.add_argument("--num_samples", type=int, default=8, help="trials to run (default: 8)")
    parser.add_argument("--max_concurrent_trials", type=int, default=0,
                        help="trials at once (default 0: as many as the resources allow)")
    parser.add_argument("--grace_period", type=int, default=0,
                        help="steps before ASHA's first cut (default: steps / reduction_factor^2)")
    parser.add_argument("--reduction_factor", type=int, default=3, help="ASHA keeps 1/N at each rung (default 3)")
    parser.add_argument("--scheduler", default="asha", choices=("asha", "fifo"),
                        help="asha (early stopping) or fifo (every trial runs to --steps)")
    parser.add_argument("--search_seed", type=int, default=0, help="seed of the random search")
    parser.add_argument("--search_gate_init_bias", default="-3.5,-1.0", help="uniform LOW,HIGH, or 'off'")
    parser.add_argument("--search_halting_weight", default="1e-3,0.2", help="log-uniform LOW,HIGH, or 'off'")
    parser.add_argument("--search_gate_warmup", default="auto",
                        help="choices A,B,C of hrm_gate_warmup_steps; 'auto': 0, steps/8, steps/4, steps/2; 'off'")
    parser.add_argument("--search_learning_rate", default="off", help="log-uniform LOW,HIGH, or 'off' (default)")
    parser.add_argument("--no_report", action="store_true", help="skip the plots and report.md")
    add_config_flags(parser, reserved=TUNE_FLAGS)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="dotted config overrides")


def _range(text: str, flag: str, kind=float) -> tuple | None:
    if text.strip().lower() in ("off", "none", ""):
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--{flag}: expected comma-separated numbers or 'off', got {text!r}") from None
    return values


def _pair(text: str, flag: str) -> tuple[float, float] | None:
    values = _range(text, flag)
    if values is not None and len(values) != 2:
        raise UserError(f"--{flag}: expected LOW,HIGH, got {text!r}")
    return values


def build_spec(args: argparse.Namespace):
    from hrm_ray.commands.train import overrides_from
    from hrm_ray.experiments.stage import absolute_dataset_spec, load_stage_config
    from hrm_ray.train.ray_trainer import check_before_start, storage_root
    from hrm_ray.tune.sweep import SearchSpace, SweepSpec

    if not args.config and args.profile:
        raise UserError("--profile needs --config (profiles are defined in the config YAML)")
    overrides = overrides_from(args)
    if args.config:
        cfg = load_stage_config(args.config, args.profile, overrides)
    else:
        from hrm_ray.config import build_config

        cfg = build_config(None, overrides)
        if cfg.data.dataset != "synthetic":  # trials run in their own directories
            cfg.data.dataset = absolute_dataset_spec(cfg.data.dataset)
    check_before_start(cfg)  # --init_from, the data: fail here, not in every trial
    warmup = None if args.search_gate_warmup == "auto" else _range(args.search_gate_warmup, "search_gate_warmup", int)
    space = SearchSpace(
        gate_init_bias=_pair(args.search_gate_init_bias, "search_gate_init_bias"),
        halting_weight=_pair(args.search_halting_weight, "search_halting_weight"),
        gate_warmup_steps=warmup,
        learning_rate=_pair(args.search_learning_rate, "search_learning_rate"),
    ).resolved(cfg.train.steps)
    if args.search_gate_warmup.strip().lower() in ("off", "none"):
        space.gate_warmup_steps = None
    storage = args.sweep_dir or join(storage_root(cfg), "sweeps")
    storage = storage if is_remote(storage) else os.path.abspath(storage)
    return SweepSpec(base=to_dict(cfg), name=args.name, storage=storage,
                     space=space, num_samples=args.num_samples, max_concurrent_trials=args.max_concurrent_trials,
                     grace_period=args.grace_period, reduction_factor=args.reduction_factor,
                     scheduler=args.scheduler, seed=args.search_seed)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from hrm_ray.tune.sweep import results_table, run_sweep

    spec = build_spec(args)
    console = Console(highlight=False, soft_wrap=True)
    result = run_sweep(spec, log=console.print, report=not args.no_report)
    console.print(results_table(result))
    if result.interrupted:
        return 130
    if result.best is not None:
        console.print(f"best trial {result.best.trial_id}: val loss {result.best.best_val_loss:.4f}; "
                      f"config {result.best_config}")
    errors = [r for r in result.rows if r.status == "ERROR"]
    if errors and len(errors) == len(result.rows):
        raise UserError(f"all {len(errors)} trials failed (trial {errors[0].trial_id}: {errors[0].error})")
    for row in errors:
        console.print(f"[red]trial {row.trial_id} failed: {row.error}[/red]")
    if result.report:
        console.print(f"report: {result.report}")
    return 0
