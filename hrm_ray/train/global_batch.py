"""The global batch: what one optimizer step sees, the same whatever the number of workers.

The language model's global batch is `train.batch_size x train.grad_accum_steps x ray.num_workers` (for an
elastic run, `ray.num_workers` is the most workers it runs with). A worker group of `world` workers gives each
rank `global / world` samples a step, in micro-batches of `train.batch_size`, so a resized run accumulates more
micro-batches per rank instead of training on a smaller batch. The loss is normalised by the global batch's
token count (hrm_ray.train.loop.forward_backward), so the gradient of a step does not depend on how its
samples are split over ranks and micro-batches. The puzzle models split `train.global_batch_size` over the
ranks as one batch each (their ACT carry holds one slot per sample): `resolve_config` does it for
`ray.num_workers`, `local_batch_size` again for a resized group.
"""
from __future__ import annotations

from hrm_ray.config import Config
from hrm_ray.errors import UserError


def planned_workers(cfg: Config) -> int:
    """The worker count the global batch is planned for (1 in-process)."""
    return max(1, cfg.ray.num_workers)


def micro_batches(cfg: Config, world_size: int) -> int:
    """Micro-batches per rank and optimizer step for a group of `world_size` ranks."""
    if cfg.task == "puzzle":
        return cfg.train.grad_accum_steps
    per_step = cfg.train.grad_accum_steps * planned_workers(cfg)
    if per_step % world_size:
        raise UserError(f"--num_workers: {world_size} workers cannot share a global batch of {per_step} "
                        f"micro-batches of {cfg.train.batch_size}")
    return per_step // world_size


def worker_counts(cfg: Config) -> range:
    """Every size the worker group may take: min_workers..num_workers (elastic), else num_workers."""
    return range(cfg.ray.min_workers or cfg.ray.num_workers, cfg.ray.num_workers + 1)


def check_worker_range(cfg: Config) -> None:
    """A UserError, before anything starts, when some worker count of an elastic run cannot share the global
    batch evenly (it would change the batch, or the loss, on a resize)."""
    if not cfg.ray.min_workers:
        return
    if cfg.task == "puzzle":
        units, what = cfg.train.global_batch_size, "examples"
    else:
        units, what = cfg.train.grad_accum_steps * planned_workers(cfg), f"micro-batches of {cfg.train.batch_size}"
    bad = [w for w in worker_counts(cfg) if units % w]
    if bad:
        raise UserError(f"--num_workers {cfg.ray.min_workers}-{cfg.ray.num_workers}: the global batch of {units} "
                        f"{what} does not split evenly over {bad[0]} workers; choose a range whose every size "
                        f"divides {units}")
