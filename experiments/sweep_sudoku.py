"""Sweep the gated puzzle HRM's gate_init_bias, gate_hidden_ratio and lr with Ray Tune + ASHA on exact accuracy
(each trial a Ray Train run of configs/sudoku.yaml with arch=hrm_v1_gated; the machinery of hrm_ray.tune.sweep).

    python experiments/sweep_sudoku.py --profile demo --num_samples 8 --max_concurrent_trials 2
    python experiments/sweep_sudoku.py --profile gpu --num_samples 16 data_path=data/sudoku-extreme-1k-aug-1000
"""
from __future__ import annotations

import sys
from pathlib import Path

from hrm_ray.experiments.puzzle import puzzle_sweep_main

CONFIG = Path(__file__).resolve().parent / "configs" / "sudoku.yaml"

if __name__ == "__main__":
    sys.exit(puzzle_sweep_main(CONFIG))
