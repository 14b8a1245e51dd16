"""Stage B of the HRM x LM curriculum (settings: configs/stage_b.yaml; sizes: --profile demo|gpu|cluster).

    python experiments/stage_b.py --profile demo [--steps 400] [model.hrm.ds_weight=0.2 ...]
    ray job submit --working-dir . -- python experiments/stage_b.py --profile cluster --storage_path s3://...
"""
from __future__ import annotations

import sys
from pathlib import Path

from hrm_ray.experiments.stage import stage_main

CONFIG = Path(__file__).resolve().parent / "configs" / "stage_b.yaml"

if __name__ == "__main__":
    sys.exit(stage_main(CONFIG))
