"""Multi-node data parallelism on one machine: steps/s of the same tiny LM run with 1 Train worker on one
node vs 2 workers on two nodes (`--placement_strategy SPREAD`), side by side in one run, on a real 3-node Ray
cluster of 1 CPU each (`ray start` raylets on loopback, tests/multinode_run.py).

    python bench/bench_multinode.py [--steps 60]

The batch is per worker, so 2 workers train on twice the samples per step. Steady-state rate as in
bench_ray_overhead.py (metrics.jsonl timestamps between the first and last logged window); the nodes share
this machine's cores, so the ratio measures the Ray/gloo path across raylets, not real network scaling.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

from bench.bench_ray_overhead import steady_rate  # noqa: E402
from hrm_ray.config import build_config  # noqa: E402
from hrm_ray.train.ray_trainer import train  # noqa: E402
from tests.multinode_run import local_cluster  # noqa: E402  (before any Ray import: Ray on loopback)

TINY = ["--d_model", "64", "--n_heads", "4", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
        "--max_seq_len", "32", "--batch_size", "16", "--warmup_steps", "1", "--cpus_per_worker", "1"]


def run(root: Path, address: str, steps: int, workers: int) -> dict:
    """One run of `workers` workers (SPREAD: one per node); its steady rate and the nodes its ranks ran on."""
    name = f"workers-{workers}"
    flags = [*TINY, "--steps", str(steps), "--log_steps", "10", "--val_every", str(steps), "--num_workers",
             str(workers), "--placement_strategy", "SPREAD", "--save_dir", str(root), "--run_name", name]
    train(build_config(None, flags), address=address)
    rate, _ = steady_rate(root / name)
    nodes = {w["node_id"] for w in json.loads((root / name / "workers.json").read_text())}
    return {"steps_per_s": rate, "samples_per_s": rate * 16 * workers, "nodes": len(nodes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    with local_cluster(3) as cluster:
        one = run(root, cluster.address, args.steps, 1)
        two = run(root, cluster.address, args.steps, 2)
    print(f"tiny LM (d_model 64), {args.steps} steps, batch 16 per worker, 3 nodes x 1 CPU on one machine, CPU")
    for label, r in (("1 worker  (1 node) ", one), ("2 workers (2 nodes)", two)):
        print(f"{label}: {r['steps_per_s']:7.2f} steps/s  {r['samples_per_s']:8.1f} samples/s  "
              f"(ranks on {r['nodes']} node{'s' * (r['nodes'] != 1)})")
    print(f"ratio 2/1 steps/s    : {two['steps_per_s'] / one['steps_per_s']:7.3f}")
    print(f"ratio 2/1 samples/s  : {two['samples_per_s'] / one['samples_per_s']:7.3f}")


if __name__ == "__main__":
    main()
