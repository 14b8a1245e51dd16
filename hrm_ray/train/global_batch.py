"""The global batch: what one optimizer step sees, the same whatever the number of workers.

The loop's global batch is `train.batch_size x train.grad_accum_steps x` the planned workers (the most an
elastic run runs with; hrm_ray.train.run_plan). A worker group of `world` workers gives each rank
`global / world` samples a step, in micro-batches of `train.batch_size`, so a resized run accumulates more
micro-batches per rank instead of training on a smaller batch. The loss is normalised by the global batch's
token count (hrm_ray.train.loop.forward_backward), so the gradient of a step does not depend on how its
samples are split over ranks and micro-batches. A task may split its global batch otherwise (its class methods
`micro_batches` and `global_batch`: the puzzle task splits `train.global_batch_size` over the ranks as one
batch each, its ACT carry holding one slot per sample).
"""
from __future__ import annotations

from hrm_ray.config import Config
from hrm_ray.errors import UserError
from hrm_ray.train.run_plan import RunPlan, run_plan


def global_batch(cfg: Config) -> tuple[int, str]:
    """The loop's global batch in the units it is split over workers, and their name."""
    return cfg.train.grad_accum_steps * run_plan(cfg).planned_workers, f"micro-batches of {cfg.train.batch_size}"


def micro_batches(cfg: Config, world_size: int) -> int:
    """Micro-batches per rank and optimizer step of the loop's global batch for a group of `world_size` ranks."""
    per_step, what = global_batch(cfg)
    if per_step % world_size:
        raise UserError(f"--num_workers: {world_size} workers cannot share a global batch of {per_step} {what}")
    return per_step // world_size


def check_group_sizes(plan: RunPlan, units: int, what: str) -> None:
    """A UserError, before anything starts, when some worker count of an elastic run cannot share a global
    batch of `units` `what` evenly (it would change the batch, or the loss, on a resize)."""
    if not plan.elastic:
        return
    bad = [w for w in plan.group_sizes() if units % w]
    if bad:
        raise UserError(f"--num_workers {plan.min_workers}-{plan.workers}: the global batch of {units} {what} does "
                        f"not split evenly over {bad[0]} workers; choose a range whose every size divides {units}")
