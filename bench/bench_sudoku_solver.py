"""Sudoku solver throughput: puzzles/s on top95 and sudoku17, and the full 40,000-puzzle sudoku17 run; the
difficulty mix (naked singles / hidden singles / search) of those files; the grid generator's grids per
CPU-second (6x6 and 9x9), the symmetry classes among generated 6x6 grids, and the difficulty mix of generated
6x6 puzzles at 20 and 26 blanks and dug as far as uniqueness allows.

    .venv/bin/python bench/bench_sudoku_solver.py [--data ../shared/data] [--workers 2] [--skip-full]
        [--gen-count 300]

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
from hrm_ray.data.puzzles.sudoku_difficulty import classify_many, mix, mix_text
from hrm_ray.data.puzzles.sudoku_generate import draw
from hrm_ray.data.puzzles.sudoku_grids import exact_canonical, random_grids


def timed(puzzles: np.ndarray, workers: int) -> tuple[float, int]:
    t = time.perf_counter()
    sols = solve_many(puzzles, workers=workers)
    dt = time.perf_counter() - t
    ok = sum(is_valid_solution(p, s) for p, s in zip(puzzles, sols, strict=True))
    return dt, ok


def generator_report(count: int) -> None:
    rng = np.random.default_rng(0)
    for box, n in (((2, 3), 2000), ((3, 3), 300)):
        t = time.process_time()
        random_grids(n, box, rng)
        print(f"{box[0] * box[1]}x{box[0] * box[1]} grids: {n / (time.process_time() - t):.0f} per CPU-s")
    classes = {exact_canonical(g, (2, 3)) for g in grids_6x6(200)}
    print(f"symmetry classes among 200 generated 6x6 grids: {len(classes)}")
    for blanks in (20, 26, None):
        t = time.process_time()
        ex = draw(count, (2, 3), blanks, np.random.default_rng(1))
        print(f"6x6, {blanks or 'max'} blanks: {mix_text(mix(ex.classes))}; mean blanks "
              f"{np.mean([(p == 0).sum() for p in ex.puzzles]):.1f}; {count / (time.process_time() - t):.1f} "
              "puzzles per CPU-s")


def grids_6x6(n: int) -> np.ndarray:
    return random_grids(n, (2, 3), np.random.default_rng(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("HRM_RAY_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slice", type=int, default=4000)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--gen-count", type=int, default=300, help="generated puzzles per blanks setting (0: skip)")
    args = ap.parse_args()
    if args.gen_count:
        generator_report(args.gen_count)

    top95 = read_puzzle_lines(args.data / "sudoku" / "top95.txt")
    s17 = read_puzzle_lines(args.data / "sudoku" / "sudoku17_train.txt")
    dt, ok = timed(top95, 1)
    print(f"top95 (hard), 1 process:        {len(top95)} puzzles in {dt:.2f}s = {len(top95) / dt:.0f} puzzles/s, "
          f"{ok} unique+valid")
    part = s17[:args.slice]
    for name, puzzles in (("top95", top95), (f"sudoku17[:{len(part)}]", part)):
        t = time.process_time()
        counts = mix(classify_many(puzzles, (3, 3), workers=1))
        print(f"{name} difficulty: {mix_text(counts)} ({len(puzzles) / (time.process_time() - t):.0f} "
              "classified per CPU-s)")
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
