"""`hrm-ray report`: plots and a Markdown summary of a run or a sweep directory."""
from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="RUN_OR_SWEEP_DIR",
                        help="a run directory (with metrics.jsonl) or a sweep directory (Ray Tune experiment "
                             "folder, or one with trials.jsonl); a local path, s3:// or gs://")
    parser.add_argument("--out", default=None, help="where to write the report (default: RUN_OR_SWEEP_DIR/report)")


def run(args: argparse.Namespace) -> int:
    from hrm_ray.report.build import build_report

    report = build_report(args.path, args.out)
    figures = sorted(p.name for p in report.parent.glob("*.png"))
    print(f"report: {report}")
    print(f"figures: {', '.join(figures) if figures else 'none'}")
    return 0
