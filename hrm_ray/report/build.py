"""`hrm-ray report`: tell a run directory from a sweep directory and write its report atomically."""
from __future__ import annotations

from pathlib import Path

from hrm_ray.atomic import staged_dir
from hrm_ray.errors import UserError
from hrm_ray.report.run_report import METRICS_FILE, write_run_report
from hrm_ray.report.sweep_report import TRIALS_FILE, is_sweep_dir, write_sweep_report
from hrm_ray.storage import is_remote, join, localize_tree, upload

REPORT_DIR = "report"
SKIPPED_REMOTE = ("checkpoint_", "best-model")  # what a report never reads: not copied from object storage


def detect_layout(path: Path) -> str:
    """'run' (has metrics.jsonl) or 'sweep' (trials.jsonl, or Tune trial folders)."""
    if not path.is_dir():
        raise UserError(f"{path}: no such directory")
    if (path / METRICS_FILE).is_file():
        return "run"
    if is_sweep_dir(path):
        return "sweep"
    raise UserError(f"{path}: neither a run directory (no {METRICS_FILE}) nor a sweep directory (no "
                    f"{TRIALS_FILE}, no trial folders with result.json/progress.csv)")


def build_report(path: str | Path, out: str | Path | None = None) -> Path:
    """Write figures and report.md into `out` (default PATH/report/); returns report.md's path.
    The report is built in a temporary folder beside `out` and renamed into place when whole. A run or sweep
    in object storage (s3://, gs://) is copied without its checkpoints, reported locally, and the report
    uploaded to PATH/report/ when `out` is not given."""
    if is_remote(str(path)):
        local = build_report(localize_tree(str(path), SKIPPED_REMOTE), out)
        if out is None:
            upload(local.parent, join(str(path), REPORT_DIR))
        return local
    source = Path(path)
    kind = detect_layout(source)
    target = Path(out) if out is not None else source / REPORT_DIR
    writer = write_run_report if kind == "run" else write_sweep_report
    with staged_dir(target) as staging:
        writer(source, staging)
    return target / "report.md"
