"""The config tree's flags on a command line (`hrm-ray train`, `hrm-ray tune`, experiments/sweep_*.py).

argparse reads only the command's own options (`--config`, `--dry_run`, ...) and `--help`; every other
token goes on, in order and as typed, as `args.passed_arguments` to the tree's own parser
(hrm_ray.config.build_config), which reads each flag once. `--help` lists the tree, one section per
config section, each field once with its default and the families that have it.
"""
from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

from hrm_ray.config import (
    DEFAULT_MODEL,
    MAPPED_FLAGS,
    PAPER_FLAGS,
    SEED_FLAGS,
    Config,
    flag_index,
    get_value,
    leaf_paths,
)
from hrm_ray.models import registry

SECTIONS = ("model", "data", "optim", "train", "eval", "ray", "tune")
FLAG_WIDTH = 30
CONFIG_FLAGS = "(the config flags)"  # the epilog ConfigHelpFormatter replaces by config_help()
FORMS = """\
config flags: every field of the tree below, by section. Write --FLAG VALUE or --FLAG=VALUE, --SECTION.FIELD
VALUE, or SECTION.FIELD=VALUE, in any order; a boolean flag alone means true. A field has a short flag
(--batch_size) where its name is unique in the tree and says what it sets alone; every field has its dotted
path (--train.batch_size). A --config YAML sets the same fields; flags win. [FAMILY] marks a field or a
default that only those model families have."""


def take_config_flags(parser: argparse.ArgumentParser) -> None:
    """Let `parser` pass every token it does not know to the config's parser, and list the tree in --help."""
    parser.allow_abbrev = False
    parser.formatter_class = ConfigHelpFormatter
    parser.epilog = CONFIG_FLAGS
    parser.set_defaults(passes_arguments=True)  # hrm_ray.cli: unknown tokens go on as args.passed_arguments


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """The command's own options by argparse; the config flags, in order and untouched, as
    `args.passed_arguments` (what hrm_ray.cli.main does for the `hrm-ray` commands)."""
    args, rest = parser.parse_known_args(bare_optionals(parser, argv))
    args.passed_arguments = rest
    return args


def bare_optionals(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """An option whose value is optional and one of a set (`--dry_run [1|0]`), followed by a token not in the
    set, takes no value: it is written `--opt=CONST`, so argparse leaves the token (a config flag) in place."""
    optional = {option: action for action in parser._actions if action.nargs == "?" and action.choices
                for option in action.option_strings}
    out = list(argv)
    for i, token in enumerate(out):
        action = optional.get(token)
        if action is not None:
            following = out[i + 1] if i + 1 < len(out) else None
            convert = action.type if callable(action.type) else str
            if following is None or convert(following) not in action.choices:
                out[i] = f"{token}={action.const}"
    return out


def own_options(parser: argparse.ArgumentParser) -> list[str]:
    """The option strings the command itself declares (for the suggestion of an unknown flag)."""
    return [option for action in parser._actions for option in action.option_strings]


class ConfigHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help with the config flags as its epilog, built only when the help is printed."""

    def add_text(self, text: str | None) -> None:
        super().add_text(config_help() if text is CONFIG_FLAGS else text)


def config_help() -> str:
    """Every config flag of every model family, by section: each field once, with its default."""
    trees = {name: Config(model=registry.default_config(name)) for name in registry.FAMILIES}
    parts = [FORMS]
    for section in SECTIONS:
        parts.append("\n".join([section_title(section), *section_rows(section, trees)]))
    parts.append(alias_help(trees))
    return "\n\n".join(parts) + "\n"


def section_title(section: str) -> str:
    if section == "model":
        presets = [name for name in registry.names() if name not in registry.FAMILIES]
        text = (f"model: the fields of the family --arch NAME (= --model.name) picks: "
                f"{', '.join(registry.FAMILIES)} (default {DEFAULT_MODEL}), or a preset of one: {', '.join(presets)}")
    elif section == "tune":
        text = "tune: a sweep's scheduler (hrm-ray tune); the search space is the YAML's tune: section"
    else:
        text = f"{section}:"
    return textwrap.fill(text, width=110, subsequent_indent="  ")


def section_rows(section: str, trees: dict[str, Config]) -> list[str]:
    """One line per flag of `section`: the flag, its default (per family where they differ)."""
    rows: dict[str, dict[str, tuple[str, Any]]] = {}  # flag -> family -> (dotted path, default)
    for family, cfg in trees.items():
        short = {path: name for name, path in flag_index(cfg).items()}
        for path in leaf_paths(cfg):
            if path.startswith(f"{section}.") and path != "model.name":
                flag = f"--{short.get(path, path)}"
                rows.setdefault(flag, {})[family] = (path, get_value(cfg, path))
    return [flag_row(flag, by_family, section, len(trees)) for flag, by_family in rows.items()]


def flag_row(flag: str, by_family: dict[str, tuple[str, Any]], section: str, families: int) -> str:
    groups: dict[tuple[str, str], list[str]] = {}  # (default, path when not section.flag) -> families
    for family, (path, value) in by_family.items():
        plain = path in (flag[2:], f"{section}.{flag[2:]}")
        groups.setdefault((shown(value), "" if plain else path), []).append(family)
    if len(groups) == 1 and len(by_family) == families:
        (value, path), = groups
        text = value + (f" (= {path})" if path else "")
    else:
        text = "; ".join(f"{value} [{', '.join(names)}{': ' + path if path else ''}]"
                         for (value, path), names in groups.items())
    return f"  {flag:<{FLAG_WIDTH - 2}}{text}" if len(flag) < FLAG_WIDTH - 3 else f"  {flag}  {text}"


def shown(value: Any) -> str:
    """A default as it is written on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value)) or "''"
    return "''" if value == "" else str(value)


def alias_help(trees: dict[str, Config]) -> str:
    """The other names fields answer to: the seed trainer's, the papers' and the gated fork's."""
    common = [f"--{name} = {path}" for name, path in {**SEED_FLAGS, **PAPER_FLAGS}.items()]
    lines = ["other names (the seed trainer's, the HRM papers' and the gated fork's; each sets one field):",
             *textwrap.wrap("; ".join(common), width=108, initial_indent="  ", subsequent_indent="  ")]
    by_alias: dict[str, list[str]] = {}  # "--alias = --flag" -> families
    for family, cfg in trees.items():
        short = {path: name for name, path in flag_index(cfg).items()}
        for alias, field_path in getattr(cfg.model, "ALIASES", {}).items():
            path = f"model.{field_path}"
            by_alias.setdefault(f"--{alias} = --{short.get(path, path)}", []).append(family)
    by_families: dict[tuple[str, ...], list[str]] = {}
    for alias, families in by_alias.items():
        by_families.setdefault(tuple(families), []).append(alias)
    for families, aliases in by_families.items():
        lines += textwrap.wrap(f"[{', '.join(families)}] {'; '.join(aliases)}", width=108, initial_indent="  ",
                               subsequent_indent="    ")
    lines.append("  arch.FIELD=VALUE (Hydra's form) = model.FIELD; arch=NAME also takes an arch YAML file")
    for note in MAPPED_FLAGS.values():
        lines += textwrap.wrap(note, width=108, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)
