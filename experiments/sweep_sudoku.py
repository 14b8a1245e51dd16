"""Sweep the gated puzzle HRM on Sudoku with Ray Tune + ASHA, ranked by exact accuracy: `hrm-ray tune` with
configs/sudoku.yaml as the default --config (its `tune:` section: gating on, gate_init_bias,
gate_hidden_ratio, learning_rate). Under --profile demo the demo Sudoku is built when missing.

    python experiments/sweep_sudoku.py --profile demo --num_samples 8 --max_concurrent_trials 2
    python experiments/sweep_sudoku.py --profile gpu --num_samples 16 data_path=data/sudoku-extreme-1k-aug-1000
    python experiments/sudoku.py --config ~/hrm-ray/runs/sweeps/sudoku-gates/best_config.yaml   # train the winner
"""
from __future__ import annotations

import sys
from pathlib import Path

from hrm_ray.commands.tune import main

CONFIG = Path(__file__).resolve().parent / "configs" / "sudoku.yaml"

if __name__ == "__main__":
    sys.exit(main(CONFIG, "sudoku-gates", demo_data=True))
