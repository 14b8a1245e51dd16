"""Ray Train glue: runs `run_loop` as the `train_loop_per_worker` of a TorchTrainer.

    train(cfg)                       # local Ray started here, or RAY_ADDRESS / --address
      -> TorchTrainer(_train_worker, {"task": task, ...},
                      ScalingConfig(num_workers, use_gpu, resources_per_worker),
                      RunConfig(storage_path, name=run_name, CheckpointConfig(num_to_keep=checkpoint_limit),
                                FailureConfig(max_failures)),
                      datasets=task.ray_datasets())

Every rank calls `ray.train.report` at each evaluation and rank 0 passes the checkpoint; a restarted
worker group (max_failures) and a relaunch of the same run name resume from `ray.train.get_checkpoint()`.
`num_workers=0` runs the loop in-process (Ray's local mode), checkpoints kept by `LocalReporter`.
"""
from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from hrm_ray.config import Config, to_dict
from hrm_ray.errors import UserError
from hrm_ray.train.checkpoint import CheckpointStore, checkpoint_dir_name, read_meta, save_checkpoint
from hrm_ray.train.loop import LocalReporter, LoopResult, finished_result, run_loop, total_steps
from hrm_ray.train.run_files import RunFiles, is_remote, join
from hrm_ray.train.task import Task, WorkerContext, ddp_kwargs, selection

CONFIG_FILE = "config.yaml"


class RayReporter:
    """Checkpoints through Ray Train: rank 0 writes one to a temp dir, Ray copies it into the run dir."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def latest_checkpoint(self) -> Path | None:
        """Ray's latest checkpoint, or a newer complete one in a local run directory: Ray registers a
        reported checkpoint when its controller next polls the workers, so one reported just before a
        worker died is on disk but unknown to `get_checkpoint()`."""
        import ray.train

        candidates = []
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            candidates.append(Path(checkpoint.to_directory()))
        if not is_remote(self.run_dir):
            newest = CheckpointStore(self.run_dir, 0).latest()
            if newest is not None:
                candidates.append(newest)
        return max(candidates, key=lambda p: read_meta(p)["step"]) if candidates else None

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        import ray.train

        name = checkpoint_dir_name(meta["step"])
        if state is None:
            ray.train.report(metrics, checkpoint_dir_name=name)
            return
        with tempfile.TemporaryDirectory() as tmp:
            directory = save_checkpoint(state, Path(tmp, name), meta)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)),
                             checkpoint_dir_name=name)


def storage_root(cfg: Config) -> str:
    """`--storage_path` (s3://, gs:// passed to Ray as they are), else `--save_dir` made absolute."""
    root = cfg.ray.storage_path or cfg.train.save_dir
    return root if is_remote(root) else os.path.abspath(os.path.expanduser(root))


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def _train_worker(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import ray.train.torch

    task: Task = config["task"]
    cfg = task.cfg
    local = config["local_mode"]
    if not local:  # a worker uses the CPUs it reserved (Ray would set 1 thread for a fractional CPU)
        torch.set_num_threads(config["threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if not local else torch.device("cuda" if cfg.ray.use_gpu else "cpu")
    shards = {name: ray.train.get_dataset_shard(name) for name in config["datasets"]}
    ctx = WorkerContext(rank=rank, world_size=world, device=device, shards=shards)
    reporter = LocalReporter(config["run_dir"], cfg.train.checkpoint_limit) if local else RayReporter(config["run_dir"])
    files = RunFiles(config["run_dir"]) if rank == 0 else None
    prepare = None if local else functools.partial(ray.train.torch.prepare_model,
                                                    parallel_strategy_kwargs=ddp_kwargs(task) or None)
    result = run_loop(cfg, task, ctx, reporter, files, prepare_model=prepare)
    return vars(result)


def stored_meta(run_dir: str) -> dict[str, Any] | None:
    """meta.json of the newest checkpoint in a local run directory (None when there is none)."""
    if is_remote(run_dir):
        return None
    latest = CheckpointStore(run_dir, 0).latest()
    return None if latest is None else read_meta(latest)


def build_task(cfg: Config) -> Task:
    """The task `cfg.task` names: the HRM x LM hybrid (lm) or the puzzle HRM (puzzle)."""
    if cfg.task == "puzzle":
        from hrm_ray.train.puzzle_task import PuzzleTask

        return PuzzleTask(cfg)
    from hrm_ray.train.lm_task import LanguageModelTask

    return LanguageModelTask(cfg)


def start_ray(cfg: Config, address: str | None = None, dashboard: bool = True) -> None:
    """Attach to `address`/`--address`/`$RAY_ADDRESS`, else start a local Ray with room for the workers
    and for Ray Data (with its dashboard: Ray Train's placement-group cleaner queries its State API)."""
    from hrm_ray.data.ray_env import ensure_ray, local_cpus

    workers_cpus = max(1, cfg.ray.num_workers) * cfg.ray.cpus_per_worker
    ensure_ray(address or cfg.ray.address or None, num_cpus=local_cpus(workers_cpus), dashboard=dashboard)


def train(cfg: Config, task: Task | None = None, address: str | None = None,
          callbacks: list | None = None) -> LoopResult:
    """Run (or resume) `cfg.train.run_name` under `<storage>/<run_name>/` and return the loop's result.
    `callbacks` go to the RunConfig (a sweep trial passes Tune's TuneReportCallback)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not cfg.train.run_name:
        cfg.train.run_name = default_run_name()
    rc = cfg.ray
    local_mode = rc.num_workers == 0
    needs_ray = not local_mode or cfg.data.dataset != "synthetic"
    if needs_ray:
        start_ray(cfg, address, dashboard=not local_mode)
    if task is None:
        task = build_task(cfg)
    cfg = task.cfg
    storage = storage_root(cfg)
    run_dir = join(storage, cfg.train.run_name)
    steps = total_steps(cfg, task.train_samples(), max(1, rc.num_workers))
    done = stored_meta(run_dir)
    if done is not None and done["step"] >= steps:
        print(f"run '{cfg.train.run_name}' is already at step {done['step']} >= steps {steps}: nothing to do "
              f"(raise --steps to train further)")
        return finished_result(done, steps, selection(task))

    RunFiles(run_dir).write_bytes(CONFIG_FILE, yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
    datasets = task.ray_datasets()
    loop_config = {"task": task, "run_dir": run_dir, "local_mode": local_mode, "datasets": sorted(datasets),
                   "threads": max(1, int(rc.cpus_per_worker))}
    resources = {"CPU": rc.cpus_per_worker}
    if rc.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=rc.num_workers, use_gpu=rc.use_gpu,
                                     resources_per_worker=None if local_mode else resources),
        run_config=RunConfig(
            storage_path=storage, name=cfg.train.run_name,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoint_limit or None),
            failure_config=FailureConfig(max_failures=rc.max_failures), callbacks=callbacks),
        datasets=datasets or None,
    )
    result = trainer.fit()
    if result.return_value is None:
        raise UserError(f"training run '{cfg.train.run_name}' returned no result (see the worker logs above)")
    return LoopResult(**result.return_value)
