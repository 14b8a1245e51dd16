"""A trial's history from its Train run's metrics.jsonl: every evaluation since step 0 (a resumed run appends
to it, where Tune's result frame of a restored trial starts at the restore)."""
from __future__ import annotations

import json
from typing import Any

from hrm_ray import storage
from hrm_ray.storage import join


def run_records(run_dir: str) -> list[dict[str, Any]]:
    """The records of the run's metrics.jsonl ([] when it has none); a line cut by an interruption skipped."""
    uri = join(run_dir, "metrics.jsonl")
    try:
        text = storage.read_text(uri) if storage.exists(uri) else ""
    except OSError:
        return []
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return records


def run_curve(records: list[dict[str, Any]], metric: str) -> list[list[float]]:
    """[[step, value], ...] of a validation metric (`val_loss` is the val records' `loss`), by step; a step
    evaluated twice (before and after a restart) counts once, the later one."""
    key = metric.removeprefix("val_")
    points = {r["step"]: float(r[key]) for r in records
              if r.get("split") == "val" and isinstance(r.get(key), int | float)}
    return [[float(step), value] for step, value in sorted(points.items())]
