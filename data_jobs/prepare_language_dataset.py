"""Prepare a language dataset (source files -> token triplets) on Ray Data.

Runs locally (`python data_jobs/prepare_language_dataset.py ...`, starting Ray itself when needed) or on a
cluster (`ray job submit --working-dir . -- python data_jobs/prepare_language_dataset.py ...`, via RAY_ADDRESS).
Same flags as `hrm-ray data prepare`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when hrm_ray is not installed

from hrm_ray.commands.data import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("prepare", prog="prepare_language_dataset.py"))
