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
    src.add_argument("--generate", choices=("6x6", "9x9"),
                     help="generate puzzles (grids of every symmetry class): train, test, test_heldout_class, "
                          "test_search splits")
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
    s.add_argument("--difficulty", choices=("naked_singles", "hidden_singles", "search"),
                   help="keep only puzzles of this propagation class (after --subsample-size for files)")
    s.add_argument("--blanks", default="20", help="--generate: holes per puzzle, or 'max' (dig while unique)")
    s.add_argument("--train-size", type=int, default=1000, help="--generate: training puzzles")
    s.add_argument("--heldout-class-size", type=int, help="--generate: test_heldout_class puzzles "
                                                          "(default: --test-size)")
    s.add_argument("--search-test-size", type=int, default=0, help="--generate: test_search puzzles")
    s.add_argument("--search-blanks", default="max", help="--generate: holes of test_search puzzles, or 'max'")
    s.add_argument("--ray", action="store_true", help="--generate: generate as Ray Data tasks")

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


def _blanks(value: str, flag: str) -> int | None:
    if value == "max":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{flag} must be a number or 'max', got {value!r}") from None


def _generate_sudoku(args: argparse.Namespace) -> None:
    from hrm_ray.data.puzzles.sudoku_generate import GeneratedSudokuConfig, build_generated_sudoku

    test_size = args.test_size if args.test_size is not None else 200
    if args.ray:
        from hrm_ray.ray_env import ensure_ray

        ensure_ray()
    build_generated_sudoku(GeneratedSudokuConfig(
        output_dir=args.output_dir, box=(2, 3) if args.generate == "6x6" else (3, 3), train_size=args.train_size,
        test_size=test_size, heldout_class_size=args.heldout_class_size if args.heldout_class_size is not None
        else test_size, search_test_size=args.search_test_size, blanks=_blanks(args.blanks, "--blanks"),
        search_blanks=_blanks(args.search_blanks, "--search-blanks"), difficulty=args.difficulty, seed=args.seed,
        use_ray=args.ray, overwrite=args.overwrite))


def run(args: argparse.Namespace) -> int:
    try:
        if args.puzzle == "sudoku" and args.generate:
            _generate_sudoku(args)
        elif args.puzzle == "sudoku":
            from hrm_ray.data.puzzles.sudoku import SudokuBuildConfig, build_sudoku_dataset

            build_sudoku_dataset(SudokuBuildConfig(
                output_dir=args.output_dir, puzzles=args.puzzles, source_csv=args.source_csv, test_csv=args.test_csv,
                hf_repo=args.hf_repo, subsample_size=args.subsample_size, num_aug=args.num_aug,
                test_fraction=args.test_fraction, test_size=args.test_size, min_difficulty=args.min_difficulty,
                difficulty=args.difficulty, seed=args.seed, workers=args.workers, overwrite=args.overwrite))
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
