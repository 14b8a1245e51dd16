"""`hrm-ray` command: one subcommand per job, each in `hrm_ray/commands/<name>.py`."""
from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from hrm_ray.commands.config_flags import bare_optionals, own_options
from hrm_ray.config import UnknownFlag, suggest
from hrm_ray.console import take_verbose_flag
from hrm_ray.errors import UserError
from hrm_ray.ray_errors import user_errors_from_ray

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("hrm_ray.commands.train", "train a model (HRM x LM or puzzle HRM) with Ray Train"),
    "generate": ("hrm_ray.commands.generate", "generate text from a trained run or checkpoint"),
    "eval": ("hrm_ray.commands.eval", "evaluate a run on a dataset"),
    "data": ("hrm_ray.commands.data", "data jobs: prepare, merge, mix, normalize-qa, build-reasoning, validate"),
    "puzzle-data": ("hrm_ray.commands.puzzle_data", "build puzzle datasets: sudoku, arc, maze"),
    "plan": ("hrm_ray.commands.plan", "plan a puzzle training run: steps, epochs, warmup"),
    "tune": ("hrm_ray.commands.tune", "sweep HRM knobs with Ray Tune and ASHA"),
    "report": ("hrm_ray.commands.report", "plot a run or sweep directory"),
    "import": ("hrm_ray.commands.import_cmd", "import a released HRM or TRM checkpoint of the papers' trainers"),
    "lm-eval": ("hrm_ray.commands.lm_eval", "lm-evaluation-harness with the hrm-ray model (arguments go to lm_eval)"),
}


class Parser(argparse.ArgumentParser):
    """argparse whose errors (a missing or malformed argument) are one `error: ...` line and exit 2, as
    every other user error; `--dry_run` (an optional value of a set) takes the next token only when it is
    one of the set (commands/config_flags.bare_optionals)."""

    def error(self, message: str) -> NoReturn:
        print_error(f"{self.prog}: {message}")
        sys.exit(2)

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(None if args is None else bare_optionals(self, args), namespace)


def print_error(message: str) -> None:
    """`error: <message>` on one line of stderr (a message's own line breaks become spaces)."""
    print("error: " + " ".join(line.strip() for line in str(message).splitlines() if line.strip()), file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="hrm-ray", description=__doc__, allow_abbrev=False)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        passes = getattr(module, "PASSES_ARGUMENTS", False)  # a wrapped tool's command line: even --help goes on
        sub = subparsers.add_parser(name, help=help_text, description=help_text, allow_abbrev=False, add_help=not passes)
        module.configure(sub)
        sub.set_defaults(handler=module.run)
    return parser


def command_options(parser: argparse.ArgumentParser, command: str) -> list[str]:
    """The option strings `command`'s own parser declares."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return own_options(subparsers.choices[command])


def unknown_argument_message(parser: argparse.ArgumentParser, command: str, token: str) -> str:
    """'unknown flag' with the closest flag of `command` (argparse alone gives no suggestion)."""
    name = token.split("=", 1)[0]
    return f"hrm-ray {command}: unknown flag '{name}'{suggest(name, command_options(parser, command))}"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hrm_ray").setLevel(logging.INFO)
    parser = build_parser()
    args, unknown = parser.parse_known_args(take_verbose_flag(list(sys.argv[1:] if argv is None else argv)))
    try:
        if unknown and not getattr(args, "passes_arguments", False):  # lm-eval's, and the config flags of train/tune
            raise UserError(unknown_argument_message(parser, args.command, unknown[0]))
        args.passed_arguments = unknown
        with user_errors_from_ray():  # a UserError raised in a Ray worker arrives wrapped
            return int(args.handler(args) or 0)
    except UnknownFlag as exc:  # a config flag: the command's own options are candidates too
        print_error(f"hrm-ray {args.command}: {exc.among(command_options(parser, args.command))}")
        code = 2
    except UserError as exc:
        print_error(str(exc))
        code = 2
    except KeyboardInterrupt:  # jobs clean their staging directories on the way out
        print_error(f"hrm-ray {args.command}: interrupted")
        code = 130
    # The failed job's frames, kept in reference cycles by its traceback, hold its Ray Data actors and their
    # CPUs until Python's cycle collector runs: a later job of the same driver would wait for those CPUs.
    gc.collect()
    return code


if __name__ == "__main__":
    sys.exit(main())
