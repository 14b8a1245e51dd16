"""`hrm-ray puzzle-data sudoku|arc|maze`: build a puzzle dataset in the paper's format."""
from __future__ import annotations

import argparse

from hrm_ray.errors import UserError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", required=True, help="dataset directory to create (written atomically)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="puzzle", required=True)

    s = sub.add_parser("sudoku", allow_abbrev=False,
                       help="Sudoku from the paper's CSV, Hugging Face, or a puzzle-per-line file")
    _common(s)
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--puzzles", help="one puzzle per line: 81 chars, 0 or . blank (solved and checked here)")
    src.add_argument("--source-csv", help="CSV source,question,answer,rating (the paper's layout)")
    src.add_argument("--hf-repo", help="Hugging Face dataset with train.csv/test.csv, e.g. sapientinc/sudoku-extreme")
    s.add_argument("--test-csv", help="test split CSV for --source-csv (else a split is held out)")
    s.add_argument("--subsample-size", type=int, help="keep this many training puzzles")
    s.add_argument("--num-aug", type=int, default=0, help="augmented copies per training puzzle")
    s.add_argument("--test-fraction", type=float, default=0.1)
    s.add_argument("--test-size", type=int, help="puzzles held out for test (overrides --test-fraction)")
    s.add_argument("--min-difficulty", type=int, help="CSV rating filter")
    s.add_argument("--workers", type=int, default=2, help="solver processes")

    a = sub.add_parser("arc", allow_abbrev=False, help="ARC-AGI JSON tasks with dihedral + colour augmentations")
    _common(a)
    a.add_argument("--tasks-dir", action="append", required=True, help="training tasks (repeatable)")
    a.add_argument("--eval-tasks-dir", action="append", required=True, help="evaluation tasks (repeatable)")
    a.add_argument("--num-aug", type=int, default=1000)
    a.add_argument("--separate-eval", action="store_true",
                   help="keep evaluation tasks out of train entirely (no demonstration pairs)")
    a.add_argument("--limit", type=int, help="first N tasks of each directory")

    m = sub.add_parser("maze", allow_abbrev=False, help="mazes in the paper's square character-grid CSV layout")
    _common(m)
    msrc = m.add_mutually_exclusive_group(required=True)
    msrc.add_argument("--source-csv", help="train CSV source,question,answer,rating")
    msrc.add_argument("--hf-repo", help="e.g. sapientinc/maze-30x30-hard-1k")
    m.add_argument("--test-csv")
    m.add_argument("--subsample-size", type=int)
    m.add_argument("--aug", action="store_true", help="8 dihedral transforms per training maze")


def run(args: argparse.Namespace) -> int:
    try:
        if args.puzzle == "sudoku":
            from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset

            build_sudoku_dataset(SudokuBuildConfig(
                output_dir=args.output_dir, puzzles=args.puzzles, source_csv=args.source_csv, test_csv=args.test_csv,
                hf_repo=args.hf_repo, subsample_size=args.subsample_size, num_aug=args.num_aug,
                test_fraction=args.test_fraction, test_size=args.test_size, min_difficulty=args.min_difficulty,
                seed=args.seed, workers=args.workers, overwrite=args.overwrite))
        elif args.puzzle == "arc":
            from hrm_ray.data.puzzles.arc import ArcBuildConfig, build_arc_dataset

            build_arc_dataset(ArcBuildConfig(
                output_dir=args.output_dir, tasks_dirs=args.tasks_dir, eval_tasks_dirs=args.eval_tasks_dir,
                num_aug=args.num_aug, separate_eval=args.separate_eval, limit=args.limit, seed=args.seed,
                overwrite=args.overwrite))
        else:
            from hrm_ray.data.puzzles.maze import MazeBuildConfig, build_maze_dataset

            build_maze_dataset(MazeBuildConfig(
                output_dir=args.output_dir, source_csv=args.source_csv, test_csv=args.test_csv, hf_repo=args.hf_repo,
                subsample_size=args.subsample_size, aug=args.aug, seed=args.seed, overwrite=args.overwrite))
    except (ValueError, FileNotFoundError) as e:
        raise UserError(str(e)) from e
    print(f"wrote {args.output_dir}")
    return 0
