"""`hrm-ray plan`: steps, evaluations and warmup of a puzzle training run, with warnings."""
from __future__ import annotations

import argparse

from hrm_ray.errors import UserError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="puzzle dataset directory (with train/dataset.json)")
    parser.add_argument("--global_batch_size", "--global-batch-size", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--eval_interval", "--eval-interval", type=int, required=True,
                        help="epochs between evaluations (must divide --epochs)")
    parser.add_argument("--lr_warmup_steps", "--lr-warmup-steps", type=int, default=0)
    parser.add_argument("--warmup_examples_factor", "--warmup-examples-factor", type=float, default=0.0,
                        help="the step/epoch guide's warmup rule: lr_warmup_steps = ceil(FACTOR x examples per "
                             "epoch / global_batch_size), i.e. FACTOR epochs of steps (replaces --lr_warmup_steps)")


def run(args: argparse.Namespace) -> int:
    from hrm_ray.data.puzzles.plan import format_plan, plan_for_dataset

    try:
        plan = plan_for_dataset(args.dataset, args.global_batch_size, args.epochs, args.eval_interval,
                                args.lr_warmup_steps, warmup_examples_factor=args.warmup_examples_factor)
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    print(format_plan(plan))
    return 0
