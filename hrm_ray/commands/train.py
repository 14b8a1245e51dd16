"""`hrm-ray train`: train (or resume) a run with Ray Train; `--dry_run` checks the model in one step.

argparse reads `--config` and `--dry_run`; every other token is a config flag, read once by the config's
parser (commands/config_flags.py): a field's own name when unique and telling (`--batch_size`,
`--ds_weight`, the seed trainer's names), its dotted path (`--model.hrm.h_cycles`), `section.key=value`.
"""
from __future__ import annotations

import argparse

from hrm_ray.commands.config_flags import take_config_flags
from hrm_ray.config import BOOL_WORDS, PAPER_FLAGS, build_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="a YAML instance of the config tree")
    parser.add_argument("--dry_run", nargs="?", const="1", default="0", choices=BOOL_WORDS, type=str.lower,
                        metavar="1|0", help="one forward/backward, no training (`--dry_run 1`/`0`, the seed's "
                                            "form, work too)")
    take_config_flags(parser)


def run(args: argparse.Namespace) -> int:
    dry = BOOL_WORDS.index(args.dry_run) < 4  # 1, true, yes, on
    cfg = build_config(args.config, args.passed_arguments, aliases=PAPER_FLAGS)
    if dry:
        from hrm_ray.train.task_registry import task_class

        print(task_class(cfg).dry_run(cfg))  # the family's task runs it: a synthetic batch, a puzzle segment
        return 0
    from hrm_ray.train.ray_trainer import train

    result = train(cfg)
    if result.already_done:
        return 0
    how = "stopped early" if result.stopped_early else "finished"
    best = "" if result.selection_metric == "loss" else f"best validation {result.selection_metric} " \
        f"{result.best_metric:.4f}, "
    print(f"run '{cfg.train.run_name}' {how} at step {result.step}/{result.total_steps}; "
          f"{best}best validation loss {result.best_val_loss:.4f}")
    return 0
