"""The puzzle HRM on ARC-AGI (settings: configs/arc.yaml; sizes: --profile demo|gpu|cluster).

    hrm-ray puzzle-data arc --tasks-dir T --eval-tasks-dir E --num-aug 1000 --output-dir data/arc-aug-1000
    python experiments/arc.py --profile gpu data_path=data/arc-aug-1000
    python experiments/arc.py --profile demo data_path=demo_data/arc       # a dataset built with --limit 8
    hrm-ray eval --run_name arc                                           # pass@1 / pass@2 after voting
"""
from __future__ import annotations

import sys
from pathlib import Path

from hrm_ray.experiments.puzzle import puzzle_main

CONFIG = Path(__file__).resolve().parent / "configs" / "arc.yaml"

if __name__ == "__main__":
    sys.exit(puzzle_main(CONFIG))
