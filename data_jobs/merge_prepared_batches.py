"""Merge prepared chunks (--batches DIR --output-dir DIR) or mix datasets (--sources ... --weights ...).

Runs locally (`python data_jobs/merge_prepared_batches.py ...`, starting Ray itself when needed) or on a
cluster (`ray job submit --working-dir . -- python data_jobs/merge_prepared_batches.py ...`, via RAY_ADDRESS).
Same flags as `hrm-ray data merge`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when hrm_ray is not installed

from hrm_ray.commands.data import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("merge", prog="merge_prepared_batches.py"))
