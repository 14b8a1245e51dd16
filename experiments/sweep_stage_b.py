"""Sweep Stage B's HRM knobs with Ray Tune + ASHA: `hrm-ray tune` with configs/stage_b.yaml as the default
--config (its `tune:` section is the search space: gate_init_bias, halting_weight, hrm_gate_warmup_steps).

    python experiments/sweep_stage_b.py --profile demo --num_samples 8 --max_concurrent_trials 2
    python experiments/sweep_stage_b.py --profile gpu --num_samples 16 --max_t 4000 --reduction_factor 4
    python experiments/stage_b.py --config ~/hrm-ray/runs/sweeps/stage-b/best_config.yaml   # train the winner

Rerunning with the same --name continues an interrupted sweep (Tuner.restore).
"""
from __future__ import annotations

import sys
from pathlib import Path

from hrm_ray.commands.tune import main

CONFIG = Path(__file__).resolve().parent / "configs" / "stage_b.yaml"

if __name__ == "__main__":
    sys.exit(main(CONFIG, "stage-b"))
