"""Exact accuracy against test-time depth, without and with Sudoku voting: trained puzzle runs (the HRM and
the TRM that bench/bench_puzzle_quality.py keeps with --save_dir) evaluated at halt_max_steps = each depth,
their weights unchanged, on the same test puzzles; voting runs `--vote` symmetric views of each puzzle.

    .venv/bin/python bench/bench_puzzle_quality.py --archs hrm_v1,trm_mlp:... --save_dir /tmp/runs
    .venv/bin/python bench/bench_puzzle_depth.py /tmp/runs/hrm_v1 /tmp/runs/trm_mlp_... [--depths 1,2,4,8,16]
        [--vote 4] [--max_examples 300] [--split test_search] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (their best-model/ is evaluated)")
    parser.add_argument("--depths", default="1,2,4,8,16")
    parser.add_argument("--vote", type=int, default=4, help="views per puzzle for voting (0: no voting)")
    parser.add_argument("--max_examples", type=int, default=300, help="test puzzles (a fixed random subset; 0 = all)")
    parser.add_argument("--batch_size", type=int, default=300)
    parser.add_argument("--split", default="test", help="the dataset split, e.g. test_search (needs-search puzzles)")
    parser.add_argument("--json", default="", help="also write the curves to this JSON file")
    args = parser.parse_args()

    import torch

    from hrm_ray.infer.loading import resolve_checkpoint
    from hrm_ray.infer.puzzle_eval import model_config
    from hrm_ray.report.depth_report import depth_curve

    torch.set_num_threads(1)
    depths = [int(d) for d in args.depths.split(",")]
    curves = {}
    for run in args.runs:
        model_dir = resolve_checkpoint(run)
        cfg = model_config(model_dir)
        start = time.perf_counter()
        curves[f"{Path(run).name} (trained at {cfg.model.halt_max_steps})"] = depth_curve(
            model_dir, depths, args.vote, args.max_examples, args.batch_size, split=args.split)
        print(f"{run}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    n = int(next(iter(curves.values()))[0]["examples"])
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "vote": args.vote, "runs": args.runs,
                                               "curves": curves}, indent=1) + "\n")
    print(f"exact accuracy (%) against test-time depth (halt_max_steps), {n} puzzles of '{args.split}'; "
          f"voted: {args.vote} symmetric views per puzzle")
    header = "".join(f"{label + (' voted' if v else ''):>34}" for label in curves for v in ([0, 1] if args.vote else [0]))
    print(f"{'depth':>6}{header}")
    for i, depth in enumerate(depths):
        cells = []
        for rows in curves.values():
            cells.append(f"{100 * rows[i]['exact_accuracy']:>34.1f}")
            if args.vote:
                cells.append(f"{100 * rows[i]['vote_exact_accuracy']:>34.1f}")
        print(f"{depth:>6}{''.join(cells)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
