"""Connect to a Ray cluster or start a local one; shared by every job that needs Ray."""
from __future__ import annotations

import math
import os

import ray


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
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1",
                 configure_logging=False)


def local_cpus(needed: float) -> int:
    """Logical CPUs for a local Ray: every core, and at least `needed` plus one left for Ray Data."""
    return max(os.cpu_count() or 1, math.ceil(needed) + 1)


def cluster_cpus() -> float:
    """Logical CPUs Ray can schedule on (the whole cluster)."""
    return float(ray.cluster_resources().get("CPU", 1.0))
