"""Build a generated reasoning task (sudoku6, arith, graph) as a prepared prompt/response dataset.

`python data_jobs/build_reasoning_tasks.py --task sudoku6 --dest data/prepared/sudoku6` (no Ray needed).
Same flags as `hrm-ray data build-tasks`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when hrm_ray is not installed

from hrm_ray.commands.data import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("build-tasks", prog="build_reasoning_tasks.py"))
