"""`hrm-ray eval`: loss/perplexity of a trained run on a dataset; exact match on held-out arithmetic."""
from __future__ import annotations

import argparse

import torch

from hrm_ray.errors import UserError
from hrm_ray.infer.loading import load_for_inference


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_name", help="run under --save_dir: its best-model/, else its newest checkpoint")
    source.add_argument("--checkpoint", help="a best-model/ or checkpoint_* directory")
    parser.add_argument("--save_dir", default="", help="where runs live: a directory, s3:// or gs:// (default: "
                                                       "$HRM_RAY_STORAGE, else ~/hrm-ray/runs)")
    parser.add_argument("--dataset", default="synthetic",
                        help="synthetic (held-out test problems, with exact match) or a prepared dataset dir")
    parser.add_argument("--max_samples", type=int, default=0, help="cap on evaluated samples (0 = all)")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--split", default="test", help="puzzle runs: the dataset split to evaluate (default: test)")
    for name in ("halt_max_steps", "h_cycles", "l_cycles"):
        parser.add_argument(f"--{name}", type=int, default=None,
                            help=f"puzzle runs: evaluate with this {name} instead of the trained one (test-time depth)")
    parser.add_argument("--vote", type=int, default=0, metavar="N",
                        help="Sudoku runs: also vote over N symmetric views of each puzzle (the first the puzzle itself)")


def run(args: argparse.Namespace) -> int:
    from hrm_ray.infer.lm_eval import evaluate_model

    if args.max_samples < 0 or args.batch_size <= 0:
        raise UserError("--max_samples must be >= 0 and --batch_size > 0")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if _puzzle_run(args):
        return _run_puzzle(args, device)
    loaded = load_for_inference(args.run_name, args.save_dir, args.checkpoint, device)
    result = evaluate_model(loaded, args.dataset, args.max_samples, args.batch_size)
    print(f"model: {loaded.path}")
    for line in result.lines():
        print(line)
    for prompt, expected, got in result.examples or []:
        print(f"  {prompt} -> {got!r} (expected {expected!r})")
    return 0


def _puzzle_run(args: argparse.Namespace) -> bool:
    from hrm_ray.infer.loading import resolve_checkpoint, resolve_run
    from hrm_ray.infer.puzzle_eval import is_puzzle_model

    args.model_dir = resolve_checkpoint(args.checkpoint) if args.checkpoint else resolve_run(args.run_name, args.save_dir)
    return is_puzzle_model(args.model_dir)


def _run_puzzle(args: argparse.Namespace, device: str) -> int:
    """Puzzle runs: --dataset is the puzzle dataset directory (default: the run's data_path)."""
    from hrm_ray.infer.puzzle_eval import evaluate_puzzle_run, format_metrics

    data_path = "" if args.dataset == "synthetic" else args.dataset
    depth = {k: getattr(args, k) for k in ("halt_max_steps", "h_cycles", "l_cycles") if getattr(args, k) is not None}
    metrics = evaluate_puzzle_run(args.model_dir, data_path, args.split, args.batch_size, args.max_samples, device,
                                  depth, args.vote)
    print(f"model: {args.model_dir}")
    for line in format_metrics(metrics):
        print(line)
    return 0
