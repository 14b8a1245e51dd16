"""Build prompt/response JSONL from a reasoning dataset (gsm8k, mbpp, science_qa, math_qa, arc).

Runs locally (`python data_jobs/build_reasoning_dataset.py ...`, starting Ray itself when needed) or on a
cluster (`ray job submit --working-dir . -- python data_jobs/build_reasoning_dataset.py ...`, via RAY_ADDRESS).
Same flags as `hrm-ray data build-reasoning`.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when hrm_ray is not installed

from hrm_ray.commands.data import job_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(job_main("build-reasoning", prog="build_reasoning_dataset.py"))
