"""`hrm-ray lm-eval ARGS...`: lm-evaluation-harness's own command line with the `hrm-ray` model registered.

    hrm-ray lm-eval --model hrm-ray --model_args run=NAME,gate_scale=1.0 --tasks arc_easy --limit 100
    hrm-ray lm-eval --model hrm-ray --model_args run=NAME --include_path my_tasks/ --tasks my_local_task

Every argument goes to lm_eval unchanged (`lm_eval --help` lists them); lm_eval 0.4 has no plugin entry
points, so `lm_eval --model hrm-ray` alone cannot find the model."""
from __future__ import annotations

import argparse

PASSES_ARGUMENTS = True  # cli.py: no --help of ours; every argument goes on, as `args.passed_arguments`


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(passes_arguments=True)


def run(args: argparse.Namespace) -> int:
    from hrm_ray.infer.harness import run_lm_eval_cli

    return run_lm_eval_cli(args.passed_arguments)
