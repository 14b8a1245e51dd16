"""`hrm-ray report`: plots and a Markdown summary of a run or a sweep directory; with --depths, exact
accuracy against test-time depth of one or more trained puzzle runs (e.g. an HRM and a TRM)."""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN_OR_SWEEP_DIR",
                        help="a run directory (with metrics.jsonl) or a sweep directory (Ray Tune experiment "
                             "folder, or one with trials.jsonl); a local path, s3:// or gs://")
    parser.add_argument("--out", default=None, help="where to write the report (default: RUN_OR_SWEEP_DIR/report)")
    parser.add_argument("--depths", default="", help="puzzle runs: evaluate at these halt_max_steps (e.g. 1,2,4,8,16) "
                                                     "and draw exact accuracy against depth")
    parser.add_argument("--compare", nargs="*", default=[], metavar="RUN_DIR",
                        help="with --depths: more runs drawn on the same figure")
    parser.add_argument("--vote", type=int, default=0, metavar="N", help="with --depths: also Sudoku voting over N views")
    parser.add_argument("--max_examples", type=int, default=0, help="with --depths: test puzzles per point (0 = all)")


def run(args: argparse.Namespace) -> int:
    from hrm_ray.report.build import build_report

    if args.depths:
        return _run_depth(args)
    report = build_report(args.path, args.out)
    figures = sorted(p.name for p in report.parent.glob("*.png"))
    print(f"report: {report}")
    print(f"figures: {', '.join(figures) if figures else 'none'}")
    return 0


def _run_depth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hrm_ray.atomic import staged_dir
    from hrm_ray.errors import UserError
    from hrm_ray.report.depth_report import write_depth_report

    try:
        depths = [int(d) for d in args.depths.split(",")]
    except ValueError:
        raise UserError(f"--depths: expected comma-separated integers such as 1,2,4,8,16, got {args.depths!r}") from None
    if min(depths) < 1:
        raise UserError(f"--depths: every depth must be >= 1, got {args.depths}")
    target = Path(args.out) if args.out else Path(args.path) / "report-depth"
    with staged_dir(target) as staging:
        write_depth_report([args.path, *args.compare], staging, depths, args.vote, args.max_examples)
    print(f"report: {target / 'report.md'}")
    print(f"figures: {target / 'depth.png'}")
    return 0
