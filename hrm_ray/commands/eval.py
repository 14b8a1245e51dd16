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
                            help=f"evaluate with this {name} instead of the trained one (test-time depth; "
                                 f"{'puzzle runs and --tasks' if name == 'h_cycles' else 'puzzle runs'})")
    parser.add_argument("--vote", type=int, default=0, metavar="N",
                        help="Sudoku runs: also vote over N symmetric views of each puzzle (the first the puzzle itself)")
    tasks = parser.add_argument_group("task evaluation (--tasks)")
    tasks.add_argument("--tasks", default="", help="comma-separated tasks (gsm8k, arc_easy, arc_challenge, mbpp, "
                                                   "reasoning, arithmetic, sudoku6, arith, graph), each NAME or NAME=PATH")
    tasks.add_argument("--task_file", action="append", default=[], metavar="NAME=PATH",
                       help="a local JSONL/Parquet file for task NAME (offline; repeatable)")
    tasks.add_argument("--limit", type=int, default=0, help="at most N examples per task (0 = all)")
    tasks.add_argument("--gate_scale", type=float, default=1.0, help="the bridge gate's scale (1 = fully open, as after the ramp)")
    tasks.add_argument("--no_adaptive_halting", action="store_true", help="run every H cycle, never halt early")
    tasks.add_argument("--max_new_tokens", type=int, default=64, help="longest generated answer, in tokens")
    tasks.add_argument("--num_workers", type=int, default=0,
                       help="shard the examples over N Ray Data actors (0 = in this process)")
    tasks.add_argument("--use_gpu", action="store_true", help="one GPU per Ray actor")
    tasks.add_argument("--output_dir", default="", help="where predictions and summary.json go "
                                                        "(default: <model dir>/../evals/<time>-<tasks>)")


def run(args: argparse.Namespace) -> int:
    from hrm_ray.infer.lm_eval import evaluate_model

    if args.max_samples < 0 or args.batch_size <= 0:
        raise UserError("--max_samples must be >= 0 and --batch_size > 0")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if _puzzle_run(args):
        return _run_puzzle(args, device)
    if args.tasks:
        return _run_tasks(args, device)
    loaded = load_for_inference(args.run_name, args.save_dir, args.checkpoint, device)
    result = evaluate_model(loaded, args.dataset, args.max_samples, args.batch_size)
    print(f"model: {loaded.path}")
    for line in result.lines():
        print(line)
    for prompt, expected, got in result.examples or []:
        print(f"  {prompt} -> {got!r} (expected {expected!r})")
    return 0


def _puzzle_run(args: argparse.Namespace) -> bool:
    from hrm_ray.infer.loading import fetch_model_dir, newest_model_dir, resolve_checkpoint
    from hrm_ray.infer.puzzle_eval import is_puzzle_model
    from hrm_ray.storage import is_remote, join, resolve_root

    if args.checkpoint:
        args.model_dir = resolve_checkpoint(args.checkpoint)
        args.model_source = args.checkpoint if is_remote(args.checkpoint) else args.model_dir
    else:  # Ray actors load the model from where it lies (s3://, gs:// or local), not from a local copy
        args.model_source = newest_model_dir(join(resolve_root(str(args.save_dir))[0], args.run_name), "--run_name")
        args.model_dir = fetch_model_dir(args.model_source)
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


def _run_tasks(args: argparse.Namespace, device: str) -> int:
    """Task metrics (`--tasks`): one line per task and metric; predictions and summary.json written."""
    from pathlib import Path

    from hrm_ray.evals.scoring import Thinking
    from hrm_ray.evals.tasks import parse_task_specs
    from hrm_ray.infer import task_runs
    from hrm_ray.infer.loading import load_model

    request = task_runs.TaskRequest(tuple(t for t in args.tasks.split(",") if t.strip()),
                                    task_runs.parse_task_files(args.task_file), args.limit, args.max_new_tokens,
                                    args.num_workers, args.use_gpu)
    parse_task_specs(request.tasks, request.task_files)  # names checked before the model loads
    loaded = load_model(args.model_dir, device)
    how = Thinking(args.gate_scale, not args.no_adaptive_halting, args.h_cycles, loaded.config.data.max_seq_len,
                   args.batch_size)
    results = task_runs.evaluate_tasks(loaded, request, how, str(args.model_source))
    out_dir = Path(args.output_dir) if args.output_dir else task_runs.default_output_dir(loaded.path, request.tasks)
    task_runs.write_results(out_dir, results, loaded.path, how, request)
    print(f"model: {loaded.path}")
    for result in results:
        for metric in result.metrics:
            print(metric.line())
    print(f"predictions: {out_dir}")
    return 0
