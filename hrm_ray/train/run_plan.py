"""How and where a run trains, decided once from its resolved config: the mode, the workers, the storage root
and the data path.

    plan = run_plan(cfg)     # cfg as hrm_ray.train.resolve.resolve_config returns it
    plan.mode                # "in-process" (--num_workers 0), "fixed" (N workers) or "elastic" (MIN-MAX)
    plan.run_dir(name)       # <storage root>/<name>

The mode decides what reads the data: a fixed group streams Ray Dataset shards; in-process and elastic runs
read the files straight (their data position is a global sample index, the same for any worker count).
The user-facing fields stay `ray.num_workers` (`MIN-MAX` sets `ray.min_workers`), `ray.storage_path`
(`--storage_path`, the seed's `--save_dir`) and `data.dataset` (`--dataset`, the paper's `data_path`).
"""
from __future__ import annotations

from dataclasses import dataclass

from hrm_ray.config import Config, RayConfig
from hrm_ray.storage import join, resolve_root

IN_PROCESS, FIXED, ELASTIC = "in-process", "fixed", "elastic"


@dataclass(frozen=True)
class WorkerGroup:
    """The mode and the workers of a run (of a `ray` section: `worker_group`)."""
    mode: str          # IN_PROCESS, FIXED or ELASTIC
    workers: int       # the most Ray Train workers (0 in-process)
    min_workers: int   # the fewest workers the group goes on with (`workers` unless elastic)

    @property
    def in_process(self) -> bool:
        return self.mode == IN_PROCESS

    @property
    def fixed_group(self) -> bool:
        return self.mode == FIXED

    @property
    def elastic(self) -> bool:
        return self.mode == ELASTIC

    @property
    def planned_workers(self) -> int:
        """The worker count the global batch is planned for (1 in-process, the most workers otherwise)."""
        return max(1, self.workers)

    def group_sizes(self) -> range:
        """Every size the worker group may take: min_workers..workers (one size unless elastic)."""
        return range(self.min_workers, self.workers + 1)

    def ray_group_size(self) -> int | tuple[int, int]:
        """Ray Train's `num_workers`: a fixed count, or (min, max) for an elastic group (`--num_workers 1-2`): it
        starts with as many as fit, goes on with fewer after a node is lost (each restart a `max_failures`
        retry, from the last checkpoint) and grows back when nodes join."""
        return (self.min_workers, self.workers) if self.elastic else self.workers


@dataclass(frozen=True)
class RunPlan(WorkerGroup):
    storage_root: str = ""  # where runs live: an absolute path or a URI (s3://, gs://)
    data_path: str = ""     # `data.dataset`: "synthetic", a path, a URI or a mixture spec PATH:WEIGHT,...

    def run_dir(self, run_name: str) -> str:
        return join(self.storage_root, run_name)


def worker_group(rc: RayConfig) -> WorkerGroup:
    """The mode and workers of the `ray` section `rc`: `num_workers` 0 in-process, `MIN-MAX` (min_workers set)
    elastic, else a fixed group."""
    mode = IN_PROCESS if rc.num_workers == 0 else ELASTIC if rc.min_workers else FIXED
    return WorkerGroup(mode, rc.num_workers, rc.min_workers or rc.num_workers)


def run_plan(cfg: Config) -> RunPlan:
    """The plan of `cfg`: read from its `ray` and `data` fields, which `resolve_config` has made absolute (the
    storage root through `hrm_ray.storage.resolve_root`, which leaves a resolved root as it is)."""
    group = worker_group(cfg.ray)
    return RunPlan(group.mode, group.workers, group.min_workers, storage_root=resolve_root(cfg.ray.storage_path)[0],
                   data_path=cfg.data.dataset)


def pin_storage_root(cfg: Config) -> str | None:
    """Resolve `ray.storage_path` to the storage root in place (`hrm_ray.storage.resolve_root`); the note for
    the log when a relative root was moved out of a Ray job's package."""
    cfg.ray.storage_path, note = resolve_root(cfg.ray.storage_path)
    return note
