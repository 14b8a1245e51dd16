"""Puzzle dataset build throughput (examples/s and MB/s written) for Sudoku and ARC.

    .venv/bin/python bench/bench_puzzle_build.py [--data ../shared/data]

Sudoku: N sudoku17 puzzles solved + num_aug augmentations each; the augmentation step alone is
also timed so its share of the build is visible. ARC: the first T training tasks with num_aug
augmentations each (a few tasks are held out as evaluation tasks).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from hrm_ray.data.puzzles.arc import ArcBuildConfig, build_arc_dataset
from hrm_ray.data.puzzles.sudoku import (
    SudokuBuildConfig,
    augment,
    build_sudoku_dataset,
    iter_grids_text,
    read_puzzle_lines,
    solve_many,
)


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("HRM_RAY_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--data", type=Path, default=default)
    ap.add_argument("--sudoku-puzzles", type=int, default=1000)
    ap.add_argument("--sudoku-aug", type=int, default=200)
    ap.add_argument("--arc-tasks", type=int, default=40)
    ap.add_argument("--arc-aug", type=int, default=100)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        puzzles = read_puzzle_lines(args.data / "sudoku" / "sudoku17_train.txt")[:args.sudoku_puzzles]
        src = tmp / "sudoku.txt"
        src.write_text("\n".join(iter_grids_text(puzzles)) + "\n")
        t = time.perf_counter()
        counts = build_sudoku_dataset(SudokuBuildConfig(output_dir=str(tmp / "sd"), puzzles=str(src),
                                                        num_aug=args.sudoku_aug, test_fraction=0.1, workers=2),
                                      log=lambda *_: None)
        dt = time.perf_counter() - t
        n = sum(counts.values())
        print(f"sudoku build: {len(puzzles)} puzzles x (1+{args.sudoku_aug}) -> {n} examples in {dt:.2f}s = "
              f"{n / dt:,.0f} examples/s, {dir_mb(tmp / 'sd') / dt:.1f} MB/s written")
        sols = solve_many(puzzles, workers=2)
        rep = np.repeat(np.arange(len(puzzles)), args.sudoku_aug)
        t = time.perf_counter()
        augment(puzzles[rep], sols[rep], np.random.default_rng(0))
        da = time.perf_counter() - t
        print(f"sudoku augmentation alone: {len(rep)} augmented puzzles in {da:.2f}s = {len(rep) / da:,.0f}/s "
              f"({da / dt:.0%} of the build)")

        files = sorted((args.data / "arc" / "training").glob("*.json"))[:args.arc_tasks]
        (tmp / "tr").mkdir()
        (tmp / "ev").mkdir()
        for i, f in enumerate(files):
            shutil.copy(f, tmp / ("ev" if i % 10 == 0 else "tr") / f.name)
        t = time.perf_counter()
        counts = build_arc_dataset(ArcBuildConfig(output_dir=str(tmp / "arc"), tasks_dirs=[str(tmp / "tr")],
                                                  eval_tasks_dirs=[str(tmp / "ev")], num_aug=args.arc_aug),
                                   log=lambda *_: None)
        dt = time.perf_counter() - t
        n = sum(counts.values())
        print(f"arc build: {len(files)} tasks x (1+{args.arc_aug}) -> {n} examples in {dt:.2f}s = "
              f"{n / dt:,.0f} examples/s, {len(files) * (1 + args.arc_aug) / dt:,.0f} augmented tasks/s, "
              f"{dir_mb(tmp / 'arc') / dt:.1f} MB/s written")


if __name__ == "__main__":
    main()
