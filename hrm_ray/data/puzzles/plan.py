"""`hrm-ray plan`: what a puzzle training run's epochs, batch and warmup amount to, and what looks wrong."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata
from hrm_ray.data.puzzles.sampler import num_iterations

TARGET_EVAL_RATIO = 10      # the paper runs ~10 evaluations: epochs / eval_interval ~ 10
MIN_WARMUP_UPDATES = 20


@dataclass
class Plan:
    groups: int
    examples_per_group: float
    examples_per_epoch: float
    global_batch_size: int
    epochs: int
    eval_interval: int
    evaluations: int
    steps_per_epoch: float
    steps_per_eval_cycle: int
    total_steps: int
    warmup_updates: int
    warnings: list[str] = field(default_factory=list)


def compute_plan(metadata: PuzzleDatasetMetadata, global_batch_size: int, epochs: int, eval_interval: int,
                 lr_warmup_steps: int) -> Plan:
    if global_batch_size <= 0:
        raise ValueError(f"--global_batch_size must be positive, got {global_batch_size}")
    if lr_warmup_steps < 0:
        raise ValueError(f"--lr_warmup_steps must be >= 0, got {lr_warmup_steps}")
    evaluations = num_iterations(epochs, eval_interval)
    groups, per_group = metadata.total_groups, metadata.mean_puzzle_examples
    per_epoch = groups * per_group
    steps_per_epoch = per_epoch / global_batch_size
    per_cycle = int(eval_interval * per_epoch // global_batch_size)  # the incomplete last batch is dropped
    total = per_cycle * evaluations
    warmup = min(lr_warmup_steps, total)
    plan = Plan(groups, per_group, per_epoch, global_batch_size, epochs, eval_interval, evaluations,
                steps_per_epoch, per_cycle, total, warmup)

    w = plan.warnings
    if per_cycle == 0:
        w.append(f"no training step at all: {eval_interval} epochs x {per_epoch:g} examples is less than one "
                 f"batch of {global_batch_size} (raise eval_interval or lower global_batch_size)")
    ratio = epochs / eval_interval
    if not TARGET_EVAL_RATIO / 2 <= ratio <= TARGET_EVAL_RATIO * 2:
        w.append(f"epochs:eval_interval is {ratio:g}:1, far from 10:1 ({evaluations} evaluations; "
                 f"try eval_interval={max(1, epochs // TARGET_EVAL_RATIO)} if it divides epochs)")
    if warmup < MIN_WARMUP_UPDATES:
        w.append(f"only {warmup} gradient updates in warmup (fewer than 10-20 makes the start unstable)")
    if lr_warmup_steps > total > 0:
        w.append(f"lr_warmup_steps ({lr_warmup_steps}) exceeds total steps ({total}): the learning rate never "
                 "reaches its peak")
    if global_batch_size > groups:
        w.append(f"global_batch_size ({global_batch_size}) is larger than the number of groups ({groups}): "
                 "one epoch is less than a batch, so a batch mixes epochs")
    if steps_per_epoch != int(steps_per_epoch):
        dropped = int(eval_interval * per_epoch) - per_cycle * global_batch_size
        w.append(f"fractional steps per epoch ({steps_per_epoch:.3f}): the last {dropped} examples of each "
                 "eval cycle are dropped (incomplete batch)")
    return plan


def plan_for_dataset(dataset_dir: str | Path, global_batch_size: int, epochs: int, eval_interval: int,
                     lr_warmup_steps: int, split: str = "train") -> Plan:
    meta = PuzzleDatasetMetadata.load(Path(dataset_dir) / split / "dataset.json")
    return compute_plan(meta, global_batch_size, epochs, eval_interval, lr_warmup_steps)


def format_plan(plan: Plan) -> str:
    lines = [
        f"groups:                {plan.groups}",
        f"examples per group:    {plan.examples_per_group:g} (one puzzle of each group per epoch)",
        f"examples per epoch:    {plan.examples_per_epoch:g}",
        f"global batch size:     {plan.global_batch_size}",
        f"steps per epoch:       {plan.steps_per_epoch:g}",
        f"epochs / eval_interval: {plan.epochs} / {plan.eval_interval} = {plan.evaluations} evaluations",
        f"steps per eval cycle:  {plan.steps_per_eval_cycle}",
        f"total steps:           {plan.total_steps}",
        f"warmup updates:        {plan.warmup_updates}",
    ]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
