"""Sweep Stage B's HRM knobs with Ray Tune + ASHA (each trial a Ray Train run of configs/stage_b.yaml).

    python experiments/sweep_stage_b.py --profile demo --num_samples 8 --max_concurrent_trials 2 --steps 300
    python experiments/sweep_stage_b.py --profile gpu --num_samples 16 --steps 4000 --search_learning_rate 1e-4,1e-3
    python experiments/stage_b.py --config runs/sweeps/stage-b/best_config.yaml   # train the winner

Rerunning with the same --name continues an interrupted sweep (Tuner.restore).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrm_ray.commands.tune import configure, run
from hrm_ray.console import take_verbose_flag
from hrm_ray.errors import UserError

CONFIG = Path(__file__).resolve().parent / "configs" / "stage_b.yaml"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    configure(parser, default_config=str(CONFIG))
    parser.set_defaults(name="stage-b")
    try:
        sys.exit(run(parser.parse_args(take_verbose_flag(sys.argv[1:]))))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
