"""Sudoku solver throughput: puzzles/s on top95 and sudoku17, and the full 40,000-puzzle sudoku17 run.

    .venv/bin/python bench/bench_sudoku_solver.py [--data ../shared/data] [--workers 2] [--skip-full]

Every puzzle is solved with the uniqueness check (search continues until a second solution is
ruled out), exactly as the dataset builder does.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from hrm_ray.data.puzzles.sudoku import is_valid_solution, read_puzzle_lines, solve_many


def timed(puzzles: np.ndarray, workers: int) -> tuple[float, int]:
    t = time.perf_counter()
    sols = solve_many(puzzles, workers=workers)
    dt = time.perf_counter() - t
    ok = sum(is_valid_solution(p, s) for p, s in zip(puzzles, sols, strict=True))
    return dt, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("HRM_RAY_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slice", type=int, default=4000)
    ap.add_argument("--skip-full", action="store_true")
    args = ap.parse_args()

    top95 = read_puzzle_lines(args.data / "sudoku" / "top95.txt")
    s17 = read_puzzle_lines(args.data / "sudoku" / "sudoku17_train.txt")
    dt, ok = timed(top95, 1)
    print(f"top95 (hard), 1 process:        {len(top95)} puzzles in {dt:.2f}s = {len(top95) / dt:.0f} puzzles/s, "
          f"{ok} unique+valid")
    part = s17[:args.slice]
    dt1, ok1 = timed(part, 1)
    print(f"sudoku17[:{len(part)}], 1 process:  {dt1:.2f}s = {len(part) / dt1:.0f} puzzles/s, {ok1} unique+valid")
    dtn, okn = timed(part, args.workers)
    print(f"sudoku17[:{len(part)}], {args.workers} processes: {dtn:.2f}s = {len(part) / dtn:.0f} puzzles/s, "
          f"{okn} unique+valid; speed-up x{dt1 / dtn:.2f}")
    if not args.skip_full:
        dt, ok = timed(s17, args.workers)
        print(f"sudoku17 full, {args.workers} processes:  {len(s17)} puzzles in {dt:.1f}s = {len(s17) / dt:.0f} "
              f"puzzles/s, {ok} unique+valid")


if __name__ == "__main__":
    main()
