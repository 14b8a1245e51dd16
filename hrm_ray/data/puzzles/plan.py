"""`hrm-ray plan`: what a puzzle training run's epochs, batch and warmup amount to, and what looks wrong."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata, load_split
from hrm_ray.data.puzzles.sampler import num_iterations

TARGET_EVAL_RATIO = 10      # the paper runs ~10 evaluations: epochs / eval_interval ~ 10
MIN_WARMUP_UPDATES = 20


@dataclass
class Plan:
    """A group is a puzzle and its augmentations (`group_indices`), a puzzle its examples (`puzzle_indices`):
    an epoch samples one puzzle of each group, so it holds groups x examples_per_puzzle examples."""
    groups: int
    examples_per_group: float            # every example of a group: the puzzle's augmented copies
    examples_per_puzzle: float           # what one epoch takes from each group
    examples_per_epoch: float
    global_batch_size: int
    epochs: int
    eval_interval: int
    evaluations: int
    steps_per_epoch: float
    steps_per_eval_cycle: int
    total_steps: int
    warmup_updates: int
    warmup_examples_factor: float = 0.0  # > 0: lr_warmup_steps = factor x examples per epoch / global batch
    warnings: list[str] = field(default_factory=list)


def compute_plan(metadata: PuzzleDatasetMetadata, global_batch_size: int, epochs: int, eval_interval: int,
                 lr_warmup_steps: int, examples_per_group: float | None = None,
                 warmup_examples_factor: float = 0.0) -> Plan:
    """`examples_per_group`: counted from the split's arrays (None: groups of one puzzle);
    `warmup_examples_factor` > 0 sets the warmup to that many epochs' worth of steps."""
    if global_batch_size <= 0:
        raise ValueError(f"--global_batch_size must be positive, got {global_batch_size}")
    if lr_warmup_steps < 0 or warmup_examples_factor < 0:
        raise ValueError("--lr_warmup_steps and --warmup_examples_factor must be >= 0")
    evaluations = num_iterations(epochs, eval_interval)
    groups, per_puzzle = metadata.total_groups, metadata.mean_puzzle_examples
    per_epoch = groups * per_puzzle
    steps_per_epoch = per_epoch / global_batch_size
    per_cycle = int(eval_interval * per_epoch // global_batch_size)  # the incomplete last batch is dropped
    total = per_cycle * evaluations
    if warmup_examples_factor > 0:
        lr_warmup_steps = warmup_steps_for(warmup_examples_factor, per_epoch, global_batch_size)
    warmup = min(lr_warmup_steps, total)
    plan = Plan(groups=groups, examples_per_group=examples_per_group or per_puzzle, examples_per_puzzle=per_puzzle,
                examples_per_epoch=per_epoch, global_batch_size=global_batch_size, epochs=epochs,
                eval_interval=eval_interval, evaluations=evaluations, steps_per_epoch=steps_per_epoch,
                steps_per_eval_cycle=per_cycle, total_steps=total, warmup_updates=warmup,
                warmup_examples_factor=warmup_examples_factor)

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


def warmup_steps_for(factor: float, examples_per_epoch: float, global_batch_size: int) -> int:
    """The step/epoch guide's warmup rule: factor x examples per epoch / global batch (rounded up)."""
    return math.ceil(factor * examples_per_epoch / global_batch_size)


def examples_per_group(dataset_dir: str | Path, split: str) -> float | None:
    """Examples over groups of the split's arrays (a group's puzzle and its augmentations); None without them."""
    try:
        sets = load_split(dataset_dir, split).sets.values()
    except FileNotFoundError:
        return None
    groups = sum(len(s.group_indices) - 1 for s in sets)
    return sum(s.num_examples for s in sets) / groups if groups else None


def plan_for_dataset(dataset_dir: str | Path, global_batch_size: int, epochs: int, eval_interval: int,
                     lr_warmup_steps: int, split: str = "train", warmup_examples_factor: float = 0.0) -> Plan:
    meta = PuzzleDatasetMetadata.load(Path(dataset_dir) / split / "dataset.json")
    return compute_plan(meta, global_batch_size, epochs, eval_interval, lr_warmup_steps,
                        examples_per_group(dataset_dir, split), warmup_examples_factor)


def format_plan(plan: Plan) -> str:
    lines = [
        f"groups:                {plan.groups}",
        f"examples per group:    {plan.examples_per_group:g} (a puzzle and its augmentations)",
        f"examples per puzzle:   {plan.examples_per_puzzle:g} (an epoch samples one puzzle of each group)",
        f"examples per epoch:    {plan.examples_per_epoch:g}",
        f"global batch size:     {plan.global_batch_size}",
        f"steps per epoch:       {plan.steps_per_epoch:g}",
        f"epochs / eval_interval: {plan.epochs} / {plan.eval_interval} = {plan.evaluations} evaluations",
        f"steps per eval cycle:  {plan.steps_per_eval_cycle}",
        f"total steps:           {plan.total_steps}",
        f"warmup updates:        {plan.warmup_updates}" + (
            f" (--warmup_examples_factor {plan.warmup_examples_factor:g} x {plan.examples_per_epoch:g} examples "
            f"per epoch / {plan.global_batch_size}: lr_warmup_steps={plan.warmup_updates})"
            if plan.warmup_examples_factor else ""),
    ]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)
