"""The README demo (`make demo`): the HRM x LM curriculum in miniature on CPU, about 10 minutes.

build demo data -> Stage A (gate closed) -> Stage B from Stage A's best (gate opens, halting) -> eval -> report

    python experiments/demo.py                            # ~/hrm-ray/runs/demo-stage-{a,b}, demo_data/
    python experiments/demo.py --a.steps 300 --b.steps 300 --batch_size 16   # per-stage and shared overrides
"""
from __future__ import annotations

import sys
from pathlib import Path

from hrm_ray.experiments.demo import demo_main

CONFIGS = Path(__file__).resolve().parent / "configs"

if __name__ == "__main__":
    sys.exit(demo_main(CONFIGS))
