"""`hrm-ray train`: train (or resume) a run with Ray Train; `--dry_run` checks the model in one step.

Every field of the config tree is a flag: its own name when unique (`--batch_size`, `--ds_weight`, the
seed trainer's names) and its dotted path (`--model.hrm.h_cycles`); `section.key=value` works too.
"""
from __future__ import annotations

import argparse

from hrm_ray.config import (
    BOOL_WORDS,
    MAPPED_FLAGS,
    PAPER_FLAGS,
    SEED_FLAGS,
    Config,
    build_config,
    dataset_given,
    flag_index,
    get_value,
    leaf_paths,
)
from hrm_ray.models import registry

BOOL_DESTS: set[str] = set()  # argparse dests of the boolean config flags


def configure(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False
    parser.add_argument("--config", default=None, help="a YAML instance of the config tree")
    parser.add_argument("--dry_run", nargs="?", const="1", default="0", metavar="1|0",
                        help="one forward/backward, no training (`--dry_run 1`/`0`, the seed's form, work too)")
    add_config_flags(parser)
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="dotted overrides")


def add_config_flags(parser: argparse.ArgumentParser, reserved: tuple[str, ...] = ()) -> None:
    """Every config field of every model family as `--dotted.path`, and as `--name` where the name is unique
    in a family's tree and not `reserved` by the command itself; values are collected by `overrides_from`
    and resolved against the chosen family's tree by build_config."""
    seen: set[str] = set()
    for name in registry.FAMILIES:
        cfg = Config(model=registry.default_config(name))
        flags = flag_index(cfg)
        for path, kind in leaf_paths(cfg).items():
            short = path.rsplit(".", 1)[-1]
            names = [f"--{path}"] + ([f"--{short}"] if flags.get(short) == path and short not in reserved else [])
            for flag in (n for n in names if n not in seen):  # one dest each: the flag reaches build_config as typed
                seen.add(flag)
                extra = {"nargs": "?", "const": "true"} if kind is bool else {}
                if kind is bool:
                    BOOL_DESTS.add(f"cfg:{flag[2:]}")
                parser.add_argument(flag, dest=f"cfg:{flag[2:]}", default=argparse.SUPPRESS, metavar=short.upper(),
                                    help=f"{path} (default: {get_value(cfg, path)})", **extra)
    family_aliases = {k: f"model.{v}" for f in registry.FAMILIES.values() for k, v in f.config_class.ALIASES.items()}
    for alias, path in {**family_aliases, **SEED_FLAGS, **PAPER_FLAGS}.items():
        if f"--{alias}" not in seen and alias not in reserved:
            seen.add(f"--{alias}")
            parser.add_argument(f"--{alias}", dest=f"cfg:{alias}", default=argparse.SUPPRESS, help=f"= {path}")
    for alias, note in MAPPED_FLAGS.items():
        if f"--{alias}" not in seen and alias not in reserved:
            extra = {"nargs": "?", "const": "true", "metavar": "true|false"} if alias == "checkpoint_every_eval" \
                else {"metavar": "DIR"}
            parser.add_argument(f"--{alias}", dest=f"cfg:{alias}", default=argparse.SUPPRESS, help=note, **extra)


def overrides_from(args: argparse.Namespace) -> list[str]:
    """The flags given on the command line, back as `--dotted.path value` tokens for build_config. A boolean
    flag given bare takes no value: a `key=value` argparse handed it is an override (`--use_gpu data_path=x`)."""
    tokens: list[str] = []
    overrides = list(args.overrides)
    for key, value in vars(args).items():
        if key.startswith("cfg:"):
            if key in BOOL_DESTS and str(value).lower() not in BOOL_WORDS:
                overrides.insert(0, str(value))
                value = "true"
            tokens += [f"--{key[4:]}", str(value)]
    return tokens + overrides


def dry_run_flag(args: argparse.Namespace) -> bool:
    """`--dry_run`, `--dry_run 1|0|true|false`; a value that is no boolean was an override after a bare flag."""
    value = str(args.dry_run).strip().lower()
    if value in BOOL_WORDS:
        return BOOL_WORDS.index(value) < 4
    args.overrides.insert(0, args.dry_run)
    return True


def run(args: argparse.Namespace) -> int:
    dry = dry_run_flag(args)
    cfg = build_config(args.config, overrides_from(args), aliases=PAPER_FLAGS)
    if dry:
        from hrm_ray.train.dry_run import dry_run, format_dry_run, puzzle_dry_run

        if cfg.task == "puzzle":
            given = dataset_given(cfg.data.dataset)
            what = f"a training batch of {cfg.data.dataset}" if given else "generated Sudoku"
            print(format_dry_run(puzzle_dry_run(cfg), what))
        else:
            print(format_dry_run(dry_run(cfg)))
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
