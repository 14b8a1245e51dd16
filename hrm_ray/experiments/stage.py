"""Run one curriculum stage: what `experiments/stage_{a,b,c}.py` call.

    python experiments/stage_b.py [--config YAML] [--profile demo|gpu|cluster] [--flag value ...] [a.b=c ...]

The stage's YAML is the default `--config`; every other argument is a config override (seed flag names
such as `--batch_size`, dotted paths such as `model.hrm.ds_weight=0.2`). Then:

- storage: `--storage_path` (or `--save_dir`), else `$HRM_RAY_STORAGE` (read here, where the job runs),
  else `~/hrm-ray/runs` (`hrm_ray.storage`); under `--profile cluster` one of the first two is required
  (the workers of a multi-node run all need to see the checkpoints);
- `--init_from NAME` without a `/` names a run under the storage root (Stage B starts from Stage A's
  best model that way); a path or an s3://, gs:// URI is used as it is;
- demo data: under `--profile demo`, datasets named `.../language`, `.../math`, `.../code` (and the
  reasoning tasks `.../sudoku6`, `.../arith`, `.../graph`) that do not exist yet are built by the job (`hrm_ray.experiments.demo_data`); inside a Ray job's package a relative
  one goes under `~/hrm-ray/`, never into the package;
- Ray: attaches to `--address` / `$RAY_ADDRESS` (as under `ray job submit`), else starts a local Ray.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hrm_ray.config import Config, build_config
from hrm_ray.console import take_verbose_flag
from hrm_ray.errors import UserError
from hrm_ray.storage import STORAGE_ENV, built_data_path, is_remote, join, resolve_input
from hrm_ray.train.lm_task import absolute_dataset_spec
from hrm_ray.train.loop import LoopResult
from hrm_ray.train.ray_trainer import check_resources, start_ray
from hrm_ray.train.run_plan import pin_storage_root, run_plan
from hrm_ray.train.task_evals import absolute_task_specs

CLUSTER_PROFILE = "cluster"
DEMO_PROFILE = "demo"


def parse_stage_args(argv: Sequence[str], default_config: str | Path) -> tuple[str, str | None, list[str]]:
    """(config path, profile, overrides) from a stage script's command line."""
    parser = argparse.ArgumentParser(add_help=True, allow_abbrev=False,
                                     usage="%(prog)s [--config YAML] [--profile NAME] [--flag value ...] "
                                           "[section.key=value ...]")
    parser.add_argument("--config", default=str(default_config), help=f"config YAML (default: {default_config})")
    parser.add_argument("--profile", default=None, help="a profile of the config: demo, gpu or cluster")
    args, overrides = parser.parse_known_args(take_verbose_flag(list(argv)))
    return args.config, args.profile, overrides


def pin_storage(cfg: Config, profile: str | None, log: Callable[[str], None] = print) -> None:
    """Set `ray.storage_path` to the storage root (`hrm_ray.storage.resolve_root`), logging where a relative
    root went when this runs inside a Ray job's package."""
    explicit = cfg.ray.storage_path
    if profile == CLUSTER_PROFILE and not (explicit or os.environ.get(STORAGE_ENV)):
        raise UserError(f"--profile {CLUSTER_PROFILE}: set --storage_path (s3://, gs:// or a shared mount) or "
                        f"${STORAGE_ENV}: the workers of a multi-node run all need to see the checkpoints")
    note = pin_storage_root(cfg)
    if note:
        log(note)


def load_stage_config(config_path: str | Path, profile: str | None, overrides: list[str],
                      log: Callable[[str], None] = print) -> Config:
    """The stage's config with storage and `init_from` resolved (no Ray, no files written)."""
    cfg = build_config(str(config_path), overrides, profile=profile)
    pin_storage(cfg, profile, log)
    init_from = cfg.train.init_from
    if init_from and "/" not in init_from and os.sep not in init_from:
        cfg.train.init_from = join(run_plan(cfg).storage_root, init_from)
    elif init_from:
        cfg.train.init_from = resolve_input(init_from, "--init_from")
    demo = profile == DEMO_PROFILE  # the demo builds missing data
    resolve = functools.partial(built_data_path, storage_root=run_plan(cfg).storage_root) if demo else None
    if cfg.data.dataset != "synthetic":
        cfg.data.dataset = absolute_dataset_spec(cfg.data.dataset, resolve)
    cfg.eval.tasks = absolute_task_specs(cfg.eval.tasks, resolve, check=False)  # checked when the run resolves
    return cfg


def check_init_from(cfg: Config) -> None:
    """Fail before Ray starts when `init_from` names weights that are not there (local or in storage)."""
    if not cfg.train.init_from:
        return
    from hrm_ray.train.checkpoint import locate_weights

    try:
        locate_weights(cfg.train.init_from)
    except UserError as exc:
        raise UserError(f"{exc} (run the previous stage first, or pass --init_from '' to start from "
                        f"scratch)") from None


def ensure_demo_data(cfg: Config, log: Callable[[str], None] = print) -> None:
    """Build the demo datasets `cfg.data.dataset` names when they are missing, then the math dev file that
    `eval.tasks` names (demo data built before it existed gets it beside the datasets)."""
    from hrm_ray.data.ingest import parse_dataset_spec
    from hrm_ray.experiments.demo_data import DEMO_SOURCES, DemoDataSpec, build_demo_data

    specs = parse_dataset_spec(cfg.data.dataset) if cfg.data.dataset != "synthetic" else []
    # a dataset in a store is never built here (the run itself says when its meta.json is missing)
    missing = [Path(p) for p, _ in specs if not is_remote(p) and not (Path(p) / "meta.json").is_file()]
    if missing:
        roots = {p.absolute().parent for p in missing}
        unknown = [str(p) for p in missing if p.name not in DEMO_SOURCES]
        if unknown or len(roots) > 1:
            raise UserError(f"--dataset: {', '.join(map(str, missing))} not found (the demo profile builds only "
                            f"{'/'.join(DEMO_SOURCES)} in one directory)")
        build_demo_data(roots.pop(), DemoDataSpec(max_seq_len=cfg.data.max_seq_len, seed=cfg.train.seed), log)
    ensure_math_dev(cfg)


def ensure_math_dev(cfg: Config) -> None:
    from hrm_ray.experiments.demo_data import MATH_DEV_FILE, DemoDataSpec, write_math_dev

    for entry in cfg.eval.tasks:
        dev = Path(entry.partition("=")[2])
        if dev.name == MATH_DEV_FILE and not dev.is_file():
            write_math_dev(dev.parent, DemoDataSpec(seed=cfg.train.seed))


def run_stage(config_path: str | Path, profile: str | None, overrides: list[str],
              log: Callable[[str], None] = print) -> tuple[Config, LoopResult]:
    cfg = load_stage_config(config_path, profile, overrides, log)
    check_init_from(cfg)
    start_ray(cfg)
    check_resources(cfg)  # before the demo's data is built: a run that cannot fit fails at once
    if profile == DEMO_PROFILE:
        ensure_demo_data(cfg, log)
    from hrm_ray.train.ray_trainer import train

    log(f"stage config {config_path} (profile {profile or 'none'}): run '{cfg.train.run_name}' in "
        f"{run_plan(cfg).storage_root}, data {cfg.data.dataset}")
    result = train(cfg)
    if not result.already_done:
        how = "stopped early" if result.stopped_early else "finished"
        log(f"run '{cfg.train.run_name}' {how} at step {result.step}/{result.total_steps}; best validation loss "
            f"{result.best_val_loss:.4f}")
    return cfg, result


def stage_main(default_config: str | Path, argv: Sequence[str] | None = None) -> int:
    """Entry point of a stage script: errors a user caused print on one line and exit 2."""
    try:
        run_stage(*parse_stage_args(sys.argv[1:] if argv is None else argv, default_config))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
