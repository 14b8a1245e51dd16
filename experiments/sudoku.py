"""The puzzle HRM on Sudoku (settings: configs/sudoku.yaml; sizes: --profile demo|gpu|cluster).

    python experiments/sudoku.py --profile demo                                  # CPU, generated puzzles
    python experiments/sudoku.py --profile demo arch=transformer_baseline run_name=sudoku-demo-baseline
    python experiments/sudoku.py --profile gpu data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 \
        eval_interval=2000 lr=7e-5 puzzle_emb_lr=7e-5 weight_decay=1.0 puzzle_emb_weight_decay=1.0
    python experiments/sudoku.py --profile gpu arch=hrm_v1_gated model.gate_init_bias=-1.5
    hrm-ray train --config experiments/configs/recipes/trm_sudoku_extreme.yaml   # the TRM paper's recipe
    ray job submit --working-dir . -- python experiments/sudoku.py --profile cluster --storage_path s3://...
"""
from __future__ import annotations

import sys
from pathlib import Path

from hrm_ray.experiments.puzzle import puzzle_main

CONFIG = Path(__file__).resolve().parent / "configs" / "sudoku.yaml"

if __name__ == "__main__":
    sys.exit(puzzle_main(CONFIG, demo_data=True))
