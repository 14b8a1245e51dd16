"""Ray Train glue: runs `run_loop` as the `train_loop_per_worker` of a TorchTrainer.

    train(cfg)                       # local Ray started here, or RAY_ADDRESS / --address
      -> TorchTrainer(_train_worker, {"task": task, ...},
                      ScalingConfig(num_workers, use_gpu, resources_per_worker, placement_strategy),
                      RunConfig(storage_path, name=run_name, CheckpointConfig(num_to_keep=checkpoint_limit),
                                FailureConfig(max_failures)),
                      datasets=task.ray_datasets())

Every rank calls `ray.train.report` at each evaluation and rank 0 passes the checkpoint; a restarted
worker group (max_failures) and a relaunch of the same run name resume from `ray.train.get_checkpoint()`.
The run plan (hrm_ray.train.run_plan) says how: in-process (`num_workers=0`) runs `run_loop` in the calling
process, without Ray Train (and without Ray unless the data needs Ray Data: a mixture), checkpoints kept in the
run directory by `LocalModeReporter`; a fixed or an elastic group of Ray Train workers otherwise.
The config is resolved (and what can be checked before Ray starts is checked) once, by `resolve_config`;
a UserError raised in a worker is not retried (hrm_ray.train.ray_failures) and reaches the caller as a
UserError.
"""
from __future__ import annotations

import functools
import json
import math
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from hrm_ray.config import CODE_VERSION_KEY, Config, RayConfig, to_dict
from hrm_ray.console import train_log_level
from hrm_ray.errors import UserError
from hrm_ray.storage import (
    adopt_store_env,
    is_file,
    is_remote,
    join,
    localize,
    ray_storage,
    read_text,
    store_env,
)
from hrm_ray.train.checkpoint import (
    CheckpointStore,
    checkpoint_dir_name,
    load_model_weights,
    save_checkpoint,
)
from hrm_ray.train.code_version import code_version
from hrm_ray.train.loop import LocalReporter, LoopResult, already_finished, run_loop, total_steps
from hrm_ray.train.memory import check_run_memory
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.resources import DATA_CPUS, Cluster, Fit, cluster_now, describe, plan_run, run_need
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.run_plan import run_plan
from hrm_ray.train.task import Task, WorkerContext, ddp_kwargs, needs_ray_data, selection
from hrm_ray.train.task_registry import build_task, task_class

CONFIG_FILE = "config.yaml"
RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's list of the run's checkpoints
# After a node loss an elastic group restarts with the workers Ray counts resources for; until the GCS has
# marked the node dead that count includes it, and the too-large group waits out this timeout (Ray: 60 s).
GROUP_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


class RayReporter:
    """Checkpoints through Ray Train: rank 0 writes one to a temp dir, Ray copies it into the run dir.

    Ray's CheckpointConfig(num_to_keep) prunes only the checkpoints its run snapshot knows. Rank 0 prunes the
    others of a local run directory, those already there when this worker started and unknown to Ray (from
    an in-process run (num_workers 0) before a resume, or reported just before a worker died), by the rule of
    `CheckpointStore.prune`: the newest `limit` by step and the final one stay. What Ray knows or may still
    register (what this worker reports) is Ray's alone: it fails on a checkpoint deleted under it.
    """

    def __init__(self, run_dir: str, limit: int = 0):
        self.run_dir = run_dir
        self.limit = limit
        self.orphans: set[str] = set()
        self._downloads: tempfile.TemporaryDirectory | None = None

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint of the run directory (local or in a bucket), else Ray's latest. Ray
        writes its checkpoints there, so the newest is at least Ray's; it is newer when one was reported just
        before a worker died: Ray registers a checkpoint when its controller next polls the workers, so that
        one is in the run directory but unknown to `get_checkpoint()`."""
        import ray.train

        store = CheckpointStore(self.run_dir, 0)
        found = [path for path, _ in store.complete()]
        if not store.remote:
            self.orphans = unknown_to_ray(self.run_dir, {Path(path).name for path in found})
        if found:
            return localize(str(found[-1]), self._download_dir(found[-1])) if store.remote else Path(found[-1])
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        if not store.remote:
            return Path(checkpoint.path)
        return Path(checkpoint.to_directory(str(self._download_dir(checkpoint.path))))

    def _download_dir(self, remote: str | Path) -> Path:
        """Where a remote checkpoint is copied, under its own name: a temporary directory removed with this
        reporter (when the training function returns, or at the worker's exit), not a copy left in /tmp per
        resume."""
        self._downloads = self._downloads or tempfile.TemporaryDirectory(prefix="hrm-ray-resume-")
        return Path(self._downloads.name, str(remote).rstrip("/").rsplit("/", 1)[-1])

    def origin(self, checkpoint: Path) -> str:
        return CheckpointStore(self.run_dir, 0).origin(checkpoint)

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
        self.prune()

    def prune(self) -> None:
        if self.orphans and self.limit > 0:
            self.orphans = prune_unknown_to_ray(self.run_dir, self.limit, self.orphans)


class LocalModeReporter(LocalReporter):
    """num_workers 0 (the loop in-process): LocalReporter, except that checkpoints Ray Train's run snapshot
    lists stay (a later run with workers resumes through that snapshot, and fails on one deleted under it);
    Ray prunes those itself when it runs again."""

    def __init__(self, run_dir: str, limit: int):
        super().__init__(run_dir, 0)  # the store saves without pruning
        self.run_dir, self.limit = str(run_dir), limit

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        super().report(metrics, state, meta)
        if state is not None and self.limit > 0:
            prune_unknown_to_ray(self.run_dir, self.limit, set(self.store.names()))


def prune_unknown_to_ray(run_dir: str, limit: int, names: set[str]) -> set[str]:
    """`CheckpointStore.prune` over those of `names` Ray Train's snapshot does not list; returns them. While
    the snapshot cannot be read (it is being written) nothing goes: the next report prunes."""
    registered = ray_registered_checkpoints(run_dir)
    if registered is None:
        return names
    names = names - registered
    CheckpointStore(run_dir, limit).prune(candidates=names)
    return names


def unknown_to_ray(run_dir: str, names: set[str]) -> set[str]:
    """Those of `names` that Ray Train's run snapshot does not list (none when it cannot be read)."""
    registered = ray_registered_checkpoints(run_dir)
    return set() if registered is None else names - registered


def ray_registered_checkpoints(run_dir: str, tries: int = 20) -> set[str] | None:
    """Names of the checkpoints Ray Train's run snapshot lists: those Ray prunes itself, and which must stay
    while it lists them (a resume fails on a snapshot naming a deleted checkpoint). Ray's controller rewrites
    the file in place as it registers checkpoints: a read that catches it half written is tried again; None
    when it stays unreadable."""
    path = join(run_dir, RAY_SNAPSHOT_FILE)
    for attempt in range(tries):
        if not is_file(path):
            return set()
        try:
            snapshot = json.loads(read_text(path))
            break
        except (OSError, ValueError):
            time.sleep(0.05 * (attempt + 1))
    else:
        return None
    results = [*snapshot.get("checkpoint_results", []), snapshot.get("latest_checkpoint_result") or {},
               *snapshot.get("pending_training_results", [])]
    return {r["checkpoint_dir_name"] for r in results if isinstance(r, dict) and "checkpoint_dir_name" in r}


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def _train_worker(config: dict[str, Any]) -> dict[str, Any]:
    import ray.train
    import ray.train.torch

    from hrm_ray.train.ray_failures import quiet_user_errors

    task: Task = config["task"]
    cfg = task.cfg
    adopt_store_env(config["store_env"])
    torch.set_num_threads(config["threads"])  # the CPUs it reserved, rounded up (Ray would set 1 for a fraction)
    quiet_user_errors()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    shards = {name: ray.train.get_dataset_shard(name) for name in config["datasets"]}
    ctx = WorkerContext(rank=rank, world_size=world, device=ray.train.torch.get_device(), shards=shards,
                        node_id=ray_node_id())
    reporter = RayReporter(config["run_dir"], cfg.train.checkpoint_limit)
    files = RunFiles(config["run_dir"]) if rank == 0 else None
    prepare = functools.partial(ray.train.torch.prepare_model, parallel_strategy_kwargs=ddp_kwargs(task) or None)
    return vars(run_loop(cfg, task, ctx, reporter, files, prepare_model=prepare))


def train_in_process(task: Task, run_dir: str, address: str | None = None) -> LoopResult:
    """num_workers 0: `run_loop` in this process, no Ray Train; Ray starts only when the task's data needs
    Ray Data (a mixture of prepared datasets). Checkpoints, resume, best-model/ and metrics.jsonl live in
    the run directory as with workers."""
    cfg = task.cfg
    if needs_ray_data(task):
        start_ray(cfg, address, dashboard=False)
        plan_resources(task)
    device = torch.device("cuda" if cfg.ray.use_gpu else "cpu")
    ctx = WorkerContext(device=device, shards=task.ray_datasets(), node_id=ray_node_id())
    reporter = LocalModeReporter(run_dir, cfg.train.checkpoint_limit)
    return run_loop(cfg, task, ctx, reporter, RunFiles(run_dir))


def ray_node_id() -> str:
    """The Ray node this process runs on ("" while this process has not joined a Ray)."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""


def stored_meta(run_dir: str) -> dict[str, Any] | None:
    """meta.json of the newest checkpoint in the run directory, local or remote (None when there is none)."""
    complete = CheckpointStore(run_dir, 0).complete()
    return complete[-1][1] if complete else None


def check_resources(cfg: Config) -> None:
    """Before slow work (a demo's data): a UserError when a run of `cfg` cannot fit the cluster Ray is up on."""
    if not run_plan(cfg).in_process:
        plan_run(cluster_now(), run_need(cfg.ray, reads_ray_data(cfg)))


def reads_ray_data(cfg: Config) -> bool:
    """Whether a run of `cfg` with Ray Train workers reads a Ray Dataset, known without building its task (its
    class says): every one but the language model's synthetic arithmetic."""
    return task_class(cfg).reads_ray_data(cfg)


def start_ray(cfg: Config, address: str | None = None, dashboard: bool = True) -> None:
    """Attach to `address`/`--address`/`$RAY_ADDRESS`, else start a local Ray with room for the workers
    and for Ray Data (with its dashboard: Ray Train's placement-group cleaner queries its State API)."""
    from hrm_ray.ray_env import ensure_ray, local_cpus

    workers_cpus = run_plan(cfg).planned_workers * cfg.ray.cpus_per_worker
    ensure_ray(address or cfg.ray.address or None, num_cpus=local_cpus(workers_cpus), dashboard=dashboard)


def check_init_weights(task: Task) -> None:
    """`--init_from` weights with a tensor of another shape than the model's (another vocabulary or size): a
    UserError on the driver. The model is built on the meta device: no memory, no random numbers drawn."""
    path = task.cfg.train.init_from
    if not path or is_remote(path):
        return
    try:
        weights = load_model_weights(path, mmap=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"--init_from {path}: cannot read its weights ({exc})") from None
    try:
        with torch.device("meta"):
            expected = task.build_model().state_dict()
    except (RuntimeError, NotImplementedError):
        return  # not buildable on the meta device: the worker's load says what does not fit
    for name, tensor in expected.items():
        other = weights.get(name) if isinstance(weights, dict) else None
        if isinstance(other, torch.Tensor) and other.shape != tensor.shape:
            raise UserError(f"--init_from {path}: '{name}' has shape {tuple(other.shape)}, this model's is "
                            f"{tuple(tensor.shape)} (another vocabulary or model size?)")


def train(cfg: Config, task: Task | None = None, address: str | None = None,
          callbacks: list | None = None, fit: Fit | None = None) -> LoopResult:
    """Run (or resume) `cfg.train.run_name` under `<storage root>/<run_name>/` and return the loop's result: with
    Ray Train workers, or (num_workers 0) in this process. `task`: one the caller built (from a resolved
    config); by default the config is resolved and its task built here. `callbacks` go to the RunConfig (a
    sweep trial passes Tune's TuneReportCallback, and `fit`, its share of the cluster); without a `fit` the run
    is planned against the cluster's resources (hrm_ray.train.resources): one that cannot fit fails at once."""
    from hrm_ray.ray_errors import user_errors_from_ray
    from hrm_ray.train.ray_failures import memory_deaths_explained

    if not cfg.train.run_name:
        cfg.train.run_name = default_run_name()
    if task is None:
        task = build_task(resolve_config(cfg))
    cfg, plan = task.cfg, run_plan(task.cfg)
    check_init_weights(task)
    run_dir = plan.run_dir(cfg.train.run_name)
    steps = total_steps(cfg, task.train_samples())
    if (done := already_finished(stored_meta(run_dir), steps, selection(task), cfg.train.run_name)) is not None:
        return done
    if plan.in_process and callbacks:
        raise ValueError("callbacks need Ray Train workers (num_workers >= 1)")
    if not plan.in_process:
        start_ray(cfg, address)
    estimate = check_memory(task, 1 if plan.in_process else workers_per_node(cfg.ray, plan.workers, cluster_now()))
    recorded = {**to_dict(cfg), CODE_VERSION_KEY: code_version()}
    RunFiles(run_dir).write_bytes(CONFIG_FILE, yaml.safe_dump(recorded, sort_keys=False).encode())
    if plan.in_process:
        return train_in_process(task, run_dir, address)
    if plan.elastic:
        # Ray Train reads it in the driver and passes it on to its controller; an environment setting wins
        os.environ.setdefault(GROUP_START_TIMEOUT_ENV, f"{cfg.ray.group_start_timeout_s:g}")
    trainer = build_trainer(task, run_dir, callbacks, plan_resources(task, fit))
    # a UserError raised in a worker arrives wrapped by Ray Train; a worker killed for memory, as one line
    with user_errors_from_ray(), memory_deaths_explained(estimate):
        result = trainer.fit()
    if result.return_value is None:
        raise UserError(f"training run '{cfg.train.run_name}' returned no result (see the worker logs above)")
    return LoopResult(**result.return_value)


def check_memory(task: Task, per_node: int = 1) -> str:
    """A UserError when one worker of the run cannot fit its node's memory (hrm_ray.train.memory), else the
    estimate in words; the probe knows the batches of the built-in tasks (`task_class`), others are not probed.
    A GPU run is not held against the host's memory (its activations live on the GPU)."""
    if task.cfg.ray.use_gpu or not isinstance(task, task_class(task.cfg)):
        return ""
    return check_run_memory(task.cfg, task.build_model, per_node).describe()


def workers_per_node(rc: RayConfig, workers: int, cluster: Cluster) -> int:
    """The most of a group of `workers` Train workers that may share one node (their memory with it)."""
    if rc.placement_strategy.upper() in ("SPREAD", "STRICT_SPREAD") and len(cluster.nodes) >= workers:
        return 1
    fits = [int(n.cpus // rc.cpus_per_worker) if rc.cpus_per_worker > 0 else workers for n in cluster.nodes]
    return max(1, min(workers, max(fits, default=1)))


def plan_resources(task: Task, fit: Fit | None = None) -> Fit:
    """`fit` (a sweep trial's share), else the run's fit on the cluster Ray is up on (a UserError when it
    cannot fit), applied to the Ray Data this driver builds: run before `task.ray_datasets()`."""
    from hrm_ray.ray_env import fit_ray_data

    if fit is None:
        cluster, need = cluster_now(), run_need(task.cfg.ray, needs_ray_data(task))
        fit = plan_run(cluster, need)
        print(describe(cluster, need, fit))
    fit_ray_data(fit.data_cpus or DATA_CPUS)
    return fit


def data_config(fit: Fit | None):
    """Ray Train's DataConfig holding the run's Ray Data to `fit.data_limit` CPUs (None: Ray's defaults)."""
    if fit is None or fit.data_limit is None:
        return None
    from ray.data import ExecutionOptions, ExecutionResources
    from ray.train import DataConfig

    return DataConfig(execution_options=ExecutionOptions(
        resource_limits=ExecutionResources.for_limits(cpu=fit.data_limit)))


def build_trainer(task: Task, run_dir: str, callbacks: list | None = None, fit: Fit | None = None):
    """The TorchTrainer of `task` (one that never retries a UserError), checkpointing into `run_dir`, its Ray
    Data held to `fit`."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

    from hrm_ray.train.ray_failures import Trainer

    cfg, rc, plan = task.cfg, task.cfg.ray, run_plan(task.cfg)
    datasets = task.ray_datasets()
    loop_config = {"task": task, "run_dir": run_dir, "datasets": sorted(datasets),
                   "threads": max(1, math.ceil(rc.cpus_per_worker - 0.01)), "store_env": store_env()}
    resources = {"CPU": rc.cpus_per_worker}
    if rc.use_gpu:
        resources["GPU"] = 1
    return Trainer(
        _train_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=plan.ray_group_size(), use_gpu=rc.use_gpu,
                                     resources_per_worker=resources, placement_strategy=rc.placement_strategy),
        run_config=RunConfig(
            **ray_storage(plan.storage_root), name=cfg.train.run_name,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.checkpoint_limit or None),
            failure_config=FailureConfig(max_failures=rc.max_failures), callbacks=callbacks,
            logging_config=LoggingConfig(log_level=train_log_level())),
        datasets=datasets or None,
        dataset_config=data_config(fit) if datasets else None,
    )
