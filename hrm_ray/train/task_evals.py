"""Task evaluations during training (the config's `eval:` section): when they are due, run on rank 0 by the
task's `task_metrics` hook (the LM's goes through hrm_ray.evals.suite), the results shared with every rank
so that a selection on a task metric stops all ranks together."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist
from torch import nn

from hrm_ray.config import Config
from hrm_ray.errors import UserError
from hrm_ray.storage import is_remote, resolve_input
from hrm_ray.train.task import Task, WorkerContext


def validation_due(val_every: int, step: int, final: bool) -> bool:
    """Every `val_every` steps and at the last one; `val_every` 0: only at the last step."""
    return final or (val_every > 0 and step % val_every == 0)


def task_evals_due(cfg: Config, step: int, final: bool) -> bool:
    """At every `eval.every`-th validation (counted from the first, at step `val_every`) and the last one."""
    if not cfg.eval.tasks:
        return False
    every = cfg.train.val_every
    return final or (every > 0 and (step // every) % cfg.eval.every == 0)


def run_task_evals(task: Task, model: nn.Module, step: int, ctx: WorkerContext) -> dict[str, float]:
    """Rank 0 evaluates `model` (the unwrapped model, evaluation weights in place) on the configured tasks;
    every rank returns rank 0's {task/metric: value}."""
    hook = getattr(task, "task_metrics", None)
    if hook is None:
        raise UserError(f"eval.tasks: the {type(task).__name__} runs no task evaluations")
    results: dict[str, float] | None = None
    if ctx.rank == 0:
        model.eval()
        try:
            results = {name: float(value) for name, value in hook(model, step).items()}
        finally:
            model.train()
    return from_rank0(results, ctx.world_size)


def from_rank0(value: Any, world_size: int) -> Any:
    """Rank 0's `value` on every rank (a collective under torch.distributed; `value` itself without it)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def selection_skipped(metric: str, cfg: Config, available: dict[str, float], evals_ran: bool) -> bool:
    """Whether this evaluation, which lacks `metric` (the selection metric), leaves selection and patience alone:
    True when the metric is a configured task's and the tasks did not run this time; a name no evaluation gives
    is a UserError listing the metrics there are."""
    tasks = {entry.split("=", 1)[0].strip() for entry in cfg.eval.tasks}
    if not evals_ran and metric.split("/", 1)[0] in tasks:
        return True
    from hrm_ray.config import suggest

    raise UserError(f"train.select_on: '{metric}' is neither a validation metric nor one of the eval.tasks' metrics "
                    f"(this run logs {', '.join(sorted(available))}){suggest(metric, available)}")


def absolute_task_specs(tasks: list[str], resolve: Callable[[str], str] | None = None,
                        check: bool = True) -> list[str]:
    """`eval.tasks` with each NAME=PATH's path made absolute by `resolve` (default: relative to where the command
    runs; the workers run elsewhere); with `check`, the names are known tasks and the files exist (UserErrors
    naming them, before anything starts)."""
    resolve = resolve or (lambda path: resolve_input(path, "eval.tasks"))
    out = []
    for entry in tasks:
        name, _, path = entry.partition("=")
        path = resolve(path.strip()) if path.strip() else ""
        if check and path and not is_remote(path) and not Path(path).is_file():
            raise UserError(f"eval.tasks: {name}={path}: file not found")
        out.append(f"{name.strip()}={path}" if path else name.strip())
    if check and out:
        from hrm_ray.evals.tasks import parse_task_specs

        parse_task_specs(out)
    return out
