"""Connect to a Ray cluster or start a local one; shared by every job that needs Ray."""
from __future__ import annotations

import math
import os
import socket

import ray

from hrm_ray.console import quiet_ray, ray_log_level, ray_runtime_env

ADDRESS_ENV = "RAY_ADDRESS"
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"
_exported: str | None = None  # the RAY_ADDRESS this process set for the local Ray it started


def ensure_ray(address: str | None = None, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Make sure Ray is up: a no-op when already initialised.

    `address` (or `RAY_ADDRESS`) connects to that cluster, as under `ray job submit`;
    otherwise a new local Ray is started (`num_cpus` logical CPUs, default: all cores), never an
    unrelated `ray start` instance that happens to run on this machine. `dashboard`: training and
    Tune need it (Ray Train's placement-group cleaner and Tune query the State API it serves; without
    it the cleaner warns every few seconds); data jobs do without.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if _exported is not None and os.environ.get(ADDRESS_ENV) == _exported:
        del os.environ[ADDRESS_ENV]  # ours, from a local Ray that has been shut down since
    address = address or os.environ.get(ADDRESS_ENV)
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=ray_runtime_env(), logging_level=ray_log_level())
    else:
        _start_local(num_cpus, dashboard)
    quiet_ray()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _start_local(num_cpus: int | None, dashboard: bool) -> None:
    """Start a local Ray whose processes all know its address: `RAY_ADDRESS` is set, before they are spawned,
    to the GCS address it is about to get. Ray's address auto-detection (Ray Train's placement-group cleaner,
    the State API behind Ray Data's and Ray Train's monitors) otherwise fails with "Found multiple active Ray
    instances", or picks another instance on this machine (a `ray start` head), when there is one."""
    global _exported
    port = free_port()
    address = f"{ray.util.get_node_ip_address()}:{port}"
    saved_port = os.environ.get(GCS_PORT_ENV)
    os.environ[GCS_PORT_ENV], os.environ[ADDRESS_ENV] = str(port), address
    try:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 configure_logging=False, runtime_env=ray_runtime_env())
    except BaseException:
        os.environ.pop(ADDRESS_ENV, None)
        raise
    finally:
        if saved_port is None:
            os.environ.pop(GCS_PORT_ENV, None)
        else:
            os.environ[GCS_PORT_ENV] = saved_port
    _exported = os.environ[ADDRESS_ENV] = ray.get_runtime_context().gcs_address


def local_cpus(needed: float) -> int:
    """Logical CPUs for a local Ray: every core, and at least `needed` plus one left for Ray Data."""
    return max(os.cpu_count() or 1, math.ceil(needed) + 1)


DATA_TASK_CPUS_KEY = "hrm_ray.data_task_cpus"


def fit_ray_data(task_cpus: float) -> None:
    """Each Ray Data read and map task this driver builds from now on takes `task_cpus` CPUs: a fraction
    where that is all a run's workers leave (hrm_ray.train.resources)."""
    from ray.data import DataContext

    DataContext.get_current().set_config(DATA_TASK_CPUS_KEY, task_cpus)


def data_task_cpus() -> float:
    """CPUs of each Ray Data read and map task this driver builds (`fit_ray_data`; Ray's default 1)."""
    from ray.data import DataContext

    return float(DataContext.get_current().get_config(DATA_TASK_CPUS_KEY, 1.0))


def cluster_cpus() -> float:
    """Logical CPUs Ray can schedule on (the whole cluster)."""
    return float(ray.cluster_resources().get("CPU", 1.0))


def node_cpus() -> list[float]:
    """Logical CPUs of each alive node of the cluster Ray is up on (nodes without CPUs left out)."""
    cpus = [float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")]
    return [c for c in cpus if c > 0]


def actor_threads(asked: int, nodes: list[float], flag: str) -> tuple[int, str | None]:
    """Threads (and CPUs requested) per actor: `asked`, capped at the largest node's CPUs, since a request
    no node can give waits for ever; the note says so when it capped."""
    largest = int(max(nodes, default=1.0))
    if asked <= largest:
        return asked, None
    threads = max(1, largest)
    return threads, (f"{flag} {asked}: the largest node of the cluster has {largest} CPU(s); each actor runs "
                     f"{threads} thread(s) and requests {threads} CPU(s)")
