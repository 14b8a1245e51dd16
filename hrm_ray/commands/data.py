"""`hrm-ray data <job>`: prepare, merge, mix, normalize-qa, build-reasoning, build-tasks, validate.

The data_jobs/ scripts parse their arguments with the same parsers (`job_main`), so a job
runs the same from the CLI, as `python data_jobs/<job>.py`, or under `ray job submit`.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from typing import NamedTuple

from hrm_ray.console import take_verbose_flag
from hrm_ray.errors import UserError
from hrm_ray.storage import is_remote, resolve_input


def add_prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", nargs="+", required=True,
                   help="files or directories (.parquet .jsonl .jsonl.gz .json .arrow .txt)")
    p.add_argument("--dest", required=True,
                   help="output dataset directory, or an s3://, gs:// URI (actors on every node write into it; meta.json last)")
    p.add_argument("--tokenizer", help="existing tokenizer.json (or a dataset holding one; s3://, gs:// too) "
                   "to reuse (its vocab size wins); "
                   "absent: train a byte-level BPE on the source")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--val-ratio", type=float, default=0.01)
    p.add_argument("--tokenizer-num-threads", type=int, default=None,
                   help="threads per tokenizer actor (and for BPE training; default: all cores)")
    p.add_argument("--tokenizer-batch-size", type=int, default=256, help="documents per encode_batch call")
    p.add_argument("--tokenizer-workers", type=int, default=None,
                   help="tokenizer actors in the pool (default: Ray's CPUs / threads)")
    p.add_argument("--tokenizer-sample-chars", type=int, default=200_000_000,
                   help="characters of source text to train the tokenizer on")
    p.add_argument("--max-files", type=int, default=None, help="use only the first N source files")
    p.add_argument("--max-records", type=int, default=None, help="use only the first N records of each file")
    p.add_argument("--text-field", default=None, help="text column (default: first of text/content/raw_content)")
    p.add_argument("--mode", choices=("continuation", "prompt_response", "auto"), default="auto")
    p.add_argument("--encoder-len", type=int, default=None, help="continuation: context tokens per window")
    p.add_argument("--decoder-len", type=int, default=None, help="continuation: target tokens per window")
    p.add_argument("--format", choices=("parquet", "jsonl", "both"), default="parquet")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val hash split")
    p.add_argument("--language", default=None, help="keep rows whose language column equals this")
    p.add_argument("--rows-per-shard", type=int, default=100_000,
                   help="most rows in one shard (each ~4 MiB work unit of the source writes its own shards)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dest")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")


def run_prepare(args: argparse.Namespace) -> int:
    from hrm_ray.data.prepare import PrepareConfig, prepare_language_dataset

    fields = PrepareConfig.__dataclass_fields__
    # Ray workers may run in another directory than this command: relative paths made absolute here.
    args.source = [resolve_input(path, "--source") for path in args.source]
    args.tokenizer = args.tokenizer and resolve_input(args.tokenizer, "--tokenizer")
    if not is_remote(args.dest):
        args.dest = os.path.abspath(os.path.expanduser(args.dest))
    cfg = PrepareConfig(**{k: v for k, v in vars(args).items() if k in fields})
    print(prepare_language_dataset(cfg).summary())
    return 0


def add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batches", required=True, help="directory (or s3://, gs:// prefix) of prepared chunk directories")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--keep-chunks", action="store_true", help="keep the chunks after a verified merge")
    p.add_argument("--format", choices=("parquet", "jsonl", "both"), default=None,
                   help="default: jsonl when every chunk is JSONL, else parquet")
    p.add_argument("--overwrite", action="store_true")


def run_merge(args: argparse.Namespace) -> int:
    from hrm_ray.data.merge import merge_prepared_batches

    print(merge_prepared_batches(args.batches, args.output_dir, args.keep_chunks, args.format,
                                 args.overwrite).summary())
    return 0


def add_mix_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sources", nargs="+", required=True, help="prepared dataset directories or s3://, gs:// URIs")
    p.add_argument("--weights", nargs="+", type=float, required=True, help="one weight per source")
    p.add_argument("--output", required=True)
    p.add_argument("--train-samples", type=int, default=None, help="default: largest mix without reuse")
    p.add_argument("--val-samples", type=int, default=None, help="default: largest mix without reuse")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")


def run_mix(args: argparse.Namespace) -> int:
    from hrm_ray.data.mix import mix_prepared

    print(mix_prepared(args.sources, args.weights, args.output, args.train_samples, args.val_samples,
                       args.seed, args.overwrite, args.address).summary())
    return 0


def add_normalize_qa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help=".json (incl. SQuAD nesting), .jsonl(.gz), .parquet, .arrow")
    p.add_argument("--output", required=True, help="prompt/response JSONL")
    p.add_argument("--question-field", default="question", help="field path, e.g. data.question")
    p.add_argument("--answer-field", default=None,
                   help="field path, e.g. answers.text[0] (default: answer; answers.text[0] for SQuAD nesting)")
    p.add_argument("--context-field", default=None)
    p.add_argument("--prompt-template", default=None, type=unescape,
                   help='default "{question}"; \\n, \\t and \\\\ in a template are a newline, a tab, a backslash')
    p.add_argument("--response-template", default="{answer}", type=unescape)
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--skip-missing", action="store_true", help="skip (and count) records missing a field")


ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(template: str) -> str:
    """A template typed in a shell, `\\n` as a newline (a shell passes `"a\\nb"` as backslash + n)."""
    return re.sub(r"\\([nt\\])", lambda m: ESCAPES[m.group(1)], template)


def run_normalize_qa(args: argparse.Namespace) -> int:
    from hrm_ray.data.qa import normalize_qa_dataset

    print(normalize_qa_dataset(args.input, args.output, args.question_field, args.answer_field,
                               args.context_field, args.prompt_template, args.response_template,
                               args.max_records, args.skip_missing).summary())
    return 0


def add_build_reasoning_args(p: argparse.ArgumentParser) -> None:
    from hrm_ray.data.reasoning import FORMATTERS

    p.add_argument("--dataset", required=True, choices=sorted(FORMATTERS))
    p.add_argument("--split", default="train")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--output", required=True, help="prompt/response JSONL")
    p.add_argument("--local-path", default=None, help="local files or a save_to_disk directory instead of the hub")
    p.add_argument("--cache-dir", default=None, help="Hugging Face datasets cache directory")
    p.add_argument("--subset", default=None, help="hub config name (e.g. ARC-Easy for arc)")
    p.add_argument("--keep-calculator-annotations", action="store_true", help="gsm8k: keep <<...>>")
    p.add_argument("--keep-image-questions", action="store_true", help="science_qa: keep questions with images")


def run_build_reasoning(args: argparse.Namespace) -> int:
    from hrm_ray.data.reasoning import build_reasoning_dataset

    print(build_reasoning_dataset(args.dataset, args.output, args.split, args.limit, args.local_path,
                                  args.cache_dir, args.subset, args.keep_calculator_annotations,
                                  args.keep_image_questions).summary())
    return 0


def add_build_tasks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=("sudoku6", "arith", "graph"))
    p.add_argument("--dest", required=True, help="output dataset directory (train/, val/, test.jsonl)")
    p.add_argument("--train", type=int, default=16000, help="training problems")
    p.add_argument("--val", type=int, default=500, help="validation problems")
    p.add_argument("--test", type=int, default=1000, help="held-out test problems (test.jsonl, never trained on)")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json to reuse (default: one token per character)")
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--seed", type=int, default=0, help="seed of the problems and of the hash split")
    p.add_argument("--sudoku_blanks", type=int, default=20, help="sudoku6: blank cells of 36 (its difficulty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --dest")


def run_build_tasks(args: argparse.Namespace) -> int:
    from hrm_ray.data.task_dataset import build_task_dataset

    print(build_task_dataset(args.task, args.dest, args.train, args.val, args.test, args.tokenizer,
                             args.max_seq_len, args.seed, args.overwrite, args.sudoku_blanks).summary())
    return 0


def add_validate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="DIR", help="prepared dataset directory or s3://, gs:// URI")


def run_validate(args: argparse.Namespace) -> int:
    from hrm_ray.data.validate import validate_dataset

    report = validate_dataset(args.path)
    print(report.summary())
    return 0 if report.ok else 1


class Job(NamedTuple):
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


JOBS: dict[str, Job] = {
    "prepare": Job(add_prepare_args, run_prepare, "source files -> token triplets (Parquet) on Ray Data"),
    "merge": Job(add_merge_args, run_merge, "merge prepared chunks into one dataset"),
    "mix": Job(add_mix_args, run_mix, "mix prepared datasets by weight with exact quotas"),
    "normalize-qa": Job(add_normalize_qa_args, run_normalize_qa, "QA records -> prompt/response JSONL"),
    "build-reasoning": Job(add_build_reasoning_args, run_build_reasoning,
                           "gsm8k/mbpp/science_qa/math_qa/arc -> prompt/response JSONL"),
    "build-tasks": Job(add_build_tasks_args, run_build_tasks,
                       "generated reasoning tasks (sudoku6/arith/graph) -> a prepared dataset"),
    "validate": Job(add_validate_args, run_validate, "check a prepared dataset; non-zero exit on problems"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_job", metavar="JOB", required=True)
    for name, job in JOBS.items():
        job.add_args(sub.add_parser(name, help=job.help, description=job.help, allow_abbrev=False))


def run(args: argparse.Namespace) -> int:
    return JOBS[args.data_job].run(args)


def job_main(job: str, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Entry point of a data_jobs/ script: the subcommand's parser, errors on one line, exit 2."""
    argv = take_verbose_flag(list(sys.argv[1:] if argv is None else argv))
    if job == "merge" and "--sources" in argv:  # merge_prepared_batches.py also runs mix mode
        job = "mix"
    parser = argparse.ArgumentParser(prog=prog, description=JOBS[job].help, allow_abbrev=False)
    JOBS[job].add_args(parser)
    args = parser.parse_args(argv)
    try:
        return JOBS[job].run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
