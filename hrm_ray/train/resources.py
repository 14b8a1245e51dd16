"""Resources planned before a run or a sweep starts, so that nothing sits pending.

    fit = plan_run(cluster, Need(workers=2, cpus_per_worker=1.0, reads_data=True))    # a Fit, or a UserError
    fit = plan_sweep(cluster, need, samples=4, max_concurrent=0)                     # fit.trials: runs at once

What a run needs: its Train workers (`cpus_per_worker` CPUs and `gpus_per_worker` GPUs each, all on ONE
node), its driver (a Tune trial's; Ray Train's own controller takes no CPU) and, when it reads a Ray
Dataset, Ray Data. Ray Data gets what the workers and drivers leave: each of its tasks `Fit.data_cpus`
(DATA_CPUS when there is room, a fraction down to MIN_DATA_CPUS when not), `Fit.data_limit` in all. A
sweep runs as many trials at once as fit. On an autoscaling cluster the plan is held against the
autoscaler's maximum (`Cluster.autoscaling`): trials may wait for nodes to come up, never for ever.
Pure Python; `cluster_now()` reads a running Ray (imported lazily).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hrm_ray.config import RayConfig
from hrm_ray.errors import UserError
from hrm_ray.train.run_plan import worker_group

DATA_CPUS = 1.0       # a Ray Data task's CPUs when there is room (Ray's default)
MIN_DATA_CPUS = 0.25  # less than this for Ray Data and the run fails instead
UNBOUNDED_NODES = 100  # an autoscaler node group without a maximum counts as this many nodes
_EPS = 1e-9


@dataclass(frozen=True)
class Node:
    cpus: float
    gpus: float = 0.0


@dataclass(frozen=True)
class Cluster:
    """The nodes a plan may use: those up now, plus what the autoscaler may add (`autoscaling`)."""
    nodes: tuple[Node, ...]
    autoscaling: bool = False

    def cpus(self) -> float:
        return sum(n.cpus for n in self.nodes)

    def gpus(self) -> float:
        return sum(n.gpus for n in self.nodes)


@dataclass(frozen=True)
class Need:
    """One Train run: `workers` x (`cpus_per_worker` CPUs + `gpus_per_worker` GPUs), each on one node; its
    driver's CPUs; whether it reads a Ray Dataset."""
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float = 0.0
    driver_cpus: float = 0.0
    reads_data: bool = False
    max_workers: int = 0  # an elastic group's most workers (it is planned for `workers`, its fewest)


@dataclass(frozen=True)
class Fit:
    """The fitted plan: `trials` runs at once (1 outside a sweep); each Ray Data task takes `data_cpus` (0: no
    Ray Dataset), a run's Ray Data at most `data_limit` CPUs at once (None: Ray's own limit)."""
    trials: int = 1
    data_cpus: float = DATA_CPUS
    data_limit: float | None = None


def run_need(rc: RayConfig, reads_data: bool, driver_cpus: float = 0.0) -> Need:
    """What one run of the `ray` section `rc` needs (`driver_cpus`: a Tune trial's driver); an elastic run
    needs its fewest workers."""
    group = worker_group(rc)
    return Need(workers=group.min_workers, cpus_per_worker=rc.cpus_per_worker, gpus_per_worker=float(rc.use_gpu),
                driver_cpus=driver_cpus, reads_data=reads_data, max_workers=group.workers if group.elastic else 0)


def plan_run(cluster: Cluster, need: Need) -> Fit:
    """The fit of one run on `cluster`, or a UserError saying what it needs and what there is."""
    fit = _fit(cluster, need, 1, MIN_DATA_CPUS)
    if fit is None:
        raise UserError(shortfall(cluster, need))
    return fit


def plan_sweep(cluster: Cluster, need: Need, samples: int, max_concurrent: int = 0) -> Fit:
    """The most trials (each a run of `need`) that fit at once, at most `max_concurrent` (0: no cap) and
    `samples`, never 0: with Ray Data's tasks at DATA_CPUS when that fits one trial, else at a fraction (no
    fewer than MIN_DATA_CPUS); a UserError when one trial does not fit."""
    cap = max(1, min(samples, max_concurrent or samples))
    for least in (DATA_CPUS, MIN_DATA_CPUS):
        for trials in range(cap, 0, -1):
            fit = _fit(cluster, need, trials, least)
            if fit is not None:
                return fit
    raise UserError("a sweep trial " + shortfall(cluster, need))


def _fit(cluster: Cluster, need: Need, trials: int, least: float) -> Fit | None:
    """`trials` runs of `need` at once, each Ray Data task with at least `least` CPUs; None when they do not fit."""
    free = _left_after(cluster, need, trials)
    if free is None:
        return None
    if not need.reads_data:
        return Fit(trials, 0.0, None)
    data_cpus = _data_cpus([cpus for cpus, _ in free], trials)
    if data_cpus < least:
        return None
    share = _floor(sum(cpus for cpus, _ in free) / trials)
    return Fit(trials, data_cpus, None if cluster.autoscaling else max(data_cpus, share))


def _left_after(cluster: Cluster, need: Need, trials: int) -> list[list[float]] | None:
    """[CPUs, GPUs] left per node once `trials` runs' workers and drivers are placed; None when they do not fit."""
    free = [[n.cpus, n.gpus] for n in cluster.nodes]
    for _ in range(trials):
        for _ in range(need.workers):
            if not _take(free, need.cpus_per_worker, need.gpus_per_worker):
                return None
        if need.driver_cpus > 0 and not _take(free, need.driver_cpus, 0.0):
            return None
    return free


def _take(free: list[list[float]], cpus: float, gpus: float) -> bool:
    """Take `cpus` and `gpus` from the node with the least room that holds both (best fit)."""
    holds = [n for n in free if n[0] >= cpus - _EPS and n[1] >= gpus - _EPS]
    if not holds:
        return False
    node = min(holds, key=lambda n: (n[1] - gpus, n[0] - cpus))
    node[0] -= cpus
    node[1] -= gpus
    return True


def _data_cpus(free_cpus: list[float], tasks: int) -> float:
    """The most CPUs (<= DATA_CPUS, in hundredths) each of `tasks` Ray Data tasks can have, one per run, all
    placed at once in `free_cpus`; 0 when not even MIN_DATA_CPUS fit."""
    sizes = sorted({_floor(min(DATA_CPUS, cpus / k)) for cpus in free_cpus for k in range(1, tasks + 1)},
                   reverse=True)
    for size in sizes:
        if size < MIN_DATA_CPUS:
            break
        if sum(math.floor(cpus / size + _EPS) for cpus in free_cpus) >= tasks:
            return size
    return 0.0


def _floor(cpus: float) -> float:
    return math.floor(cpus * 100 + _EPS) / 100


def shortfall(cluster: Cluster, need: Need) -> str:
    """'needs 3 CPUs (1 worker x 2 CPUs + 1 for Ray Data), the cluster has 2: ...': why one run does not fit."""
    has = "the cluster at its autoscaler's maximum has" if cluster.autoscaling else "the cluster has"
    workers = f"{need.workers} worker{'s' * (need.workers != 1)}"
    if need.workers * need.gpus_per_worker > cluster.gpus() + _EPS:
        return (f"needs {_num(need.workers * need.gpus_per_worker)} GPUs ({workers} x {_num(need.gpus_per_worker)} "
                f"GPU), {has} {_num(cluster.gpus())}: lower --num_workers or add GPU nodes")
    parts = [f"{workers} x {_num(need.cpus_per_worker)} CPU{'s' * (need.cpus_per_worker != 1)}"]
    parts += [f"{_num(need.driver_cpus)} for the trial's driver"] * (need.driver_cpus > 0)
    parts += [f"{_num(DATA_CPUS)} for Ray Data"] * need.reads_data
    total = need.workers * need.cpus_per_worker + need.driver_cpus + DATA_CPUS * need.reads_data
    least = total - (DATA_CPUS - MIN_DATA_CPUS) * need.reads_data
    fix = ": lower --num_workers/--cpus_per_worker or add nodes"
    if least > cluster.cpus() + _EPS:
        return f"needs {_num(total)} CPUs ({' + '.join(parts)}), {has} {_num(cluster.cpus())}{fix}"
    gpu = f" and {_num(need.gpus_per_worker)} GPU" if need.gpus_per_worker else ""
    nodes = ", ".join(f"{_num(n.cpus)} CPUs" + (f" {_num(n.gpus)} GPUs" if n.gpus else "") for n in cluster.nodes)
    return (f"needs {_num(total)} CPUs ({' + '.join(parts)}) with each worker's {_num(need.cpus_per_worker)} CPUs"
            f"{gpu} on one node, {has} {len(cluster.nodes)} nodes of {nodes}{fix}")


def describe(cluster: Cluster, need: Need, fit: Fit) -> str:
    """'resources: 1 worker x 1 CPU + Ray Data (tasks of 1 CPU, at most 3 at once) on a cluster of 4 CPUs'."""
    gpu = f" + {_num(need.gpus_per_worker)} GPU" if need.gpus_per_worker else ""
    workers = f"{need.workers}-{need.max_workers}" if need.max_workers else str(need.workers)
    plural = "s" * (need.max_workers > 0 or need.workers != 1)
    text = f"resources: {workers} worker{plural} x {_num(need.cpus_per_worker)} CPU{gpu}"
    if need.reads_data:
        limit = "" if fit.data_limit is None else f", at most {_num(fit.data_limit)} at once"
        text += f" + Ray Data (tasks of {_num(fit.data_cpus)} CPU{limit})"
    size = "at most " if cluster.autoscaling else ""
    return text + f" on a cluster of {size}{_num(cluster.cpus())} CPUs"


def _num(value: float) -> str:
    return f"{value:g}"


def cluster_now() -> Cluster:
    """The running Ray's alive nodes, plus those its autoscaler may add (hrm_ray.ray_env.ensure_ray first)."""
    import ray

    nodes = [Node(float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
             for n in ray.nodes() if n.get("Alive")]
    more = autoscaler_nodes()
    return Cluster(tuple(nodes + more), autoscaling=bool(more))


def autoscaler_nodes() -> list[Node]:
    """Every node the autoscaler may launch (each node type's resources x its maximum count); none without an
    autoscaler. Read from the cluster config the autoscaler publishes to Ray's GCS (autoscaler v2, KubeRay),
    else from the config file the cluster launcher's autoscaler (v1, which publishes none) runs with on the head,
    where a job's driver runs. An upper bound: the nodes already up are counted again, so a run fails only
    when even that cannot hold it."""
    published = _published_node_groups()
    groups = published if published is not None else _launcher_node_types()
    out: list[Node] = []
    for cpus, gpus, max_count in groups:
        out += [Node(cpus, gpus)] * (UNBOUNDED_NODES if max_count < 0 else max_count)
    return out


def _published_node_groups() -> list[tuple[float, float, int]] | None:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: without it, the launcher's file or the nodes up now
        return None
    if config is None:
        return None
    return [(float(g.resources.get("CPU", 0)), float(g.resources.get("GPU", 0)), int(g.max_count))
            for g in config.node_group_configs]


def _launcher_node_types() -> list[tuple[float, float, int]]:
    """(CPUs, GPUs, max_workers) of each worker node type in the `--autoscaling-config` file of this cluster's
    v1 autoscaler monitor, when it runs on this machine (matched by the GCS address); [] otherwise."""
    import psutil
    import ray
    import yaml

    cmdlines = (proc.info.get("cmdline") or [] for proc in psutil.process_iter(["cmdline"]))
    path = launcher_config_path(cmdlines, ray.get_runtime_context().gcs_address)
    try:
        with open(path) as file:
            config = yaml.safe_load(file) or {}
    except OSError:
        return []
    head = config.get("head_node_type")
    return [(float(t.get("resources", {}).get("CPU", 0)), float(t.get("resources", {}).get("GPU", 0)),
             int(t.get("max_workers", 0)))
            for name, t in (config.get("available_node_types") or {}).items() if name != head]


def launcher_config_path(cmdlines: Iterable[list[str]], gcs: str) -> str:
    """The `--autoscaling-config` file among these process command lines of the v1 autoscaler of the cluster at
    `gcs` (its monitor.py, not the log_monitor.py every node runs with the same GCS address); "" if none."""
    for cmd in cmdlines:
        if any(Path(part).name == "monitor.py" for part in cmd) and f"--gcs-address={gcs}" in cmd:
            path = next((a.split("=", 1)[1] for a in cmd if a.startswith("--autoscaling-config=")), "")
            if path:
                return path
    return ""
