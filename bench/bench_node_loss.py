"""Recovery after a node loss: an elastic run (`--num_workers 1-2`, one worker per node of a real 3-node Ray
cluster on this machine, tests/multinode_run.py) loses the node of its second rank mid-run and goes on with
one worker from its last checkpoint.

    python bench/bench_node_loss.py [--steps 60] [--val_every 10] [--kill_after_step 14] [--group_start_timeout_s 5]

Printed: seconds from the node's removal to the first step of the smaller group, the steps trained again
(from the last checkpoint to the step reached before the loss; the goal: at most one checkpoint interval),
and whether every step's loss equals an uninterrupted one-process run's with the same global batch. The test
cluster's GCS checks node health every 0.5 s (Ray's default takes about 30 s to declare a node dead); the
restart waits at most `--group_start_timeout_s` for a group sized before the node was declared dead.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

from hrm_ray.config import build_config  # noqa: E402
from hrm_ray.train.ray_trainer import train  # noqa: E402

TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
        "--max_seq_len", "32", "--dropout", "0", "--batch_size", "8", "--log_steps", "1", "--warmup_steps", "1",
        "--max_val_samples", "16", "--checkpoint_limit", "2"]


def train_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


def recovery(records: list[dict], killed_at: float) -> tuple[float, int, int]:
    """(seconds from the kill to the first step of the restarted group, the step it restarted at, the last
    step logged before it)."""
    for before, after in zip(records, records[1:], strict=False):
        if after["step"] <= before["step"]:
            return after["time"] - killed_at, after["step"], before["step"]
    raise SystemExit("the run never restarted: the node died after its last step (raise --steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--val_every", type=int, default=10)
    parser.add_argument("--kill_after_step", type=int, default=14)
    parser.add_argument("--group_start_timeout_s", type=float, default=5.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-node-loss-"))
    flags = [*TINY, "--steps", str(args.steps), "--val_every", str(args.val_every)]
    train(build_config(None, [*flags, "--num_workers", "0", "--grad_accum_steps", "2", "--save_dir", str(root),
                              "--run_name", "reference"]))
    out = root / "elastic.json"
    subprocess.run([sys.executable, str(REPO / "tests" / "multinode_run.py"), "--head_cpus", "0",
                    "--kill_after_step", str(args.kill_after_step), str(out), "--", *flags, "--num_workers", "1-2",
                    "--cpus_per_worker", "1", "--placement_strategy", "SPREAD", "--max_failures", "2",
                    "--group_start_timeout_s", str(args.group_start_timeout_s), "--save_dir", str(root),
                    "--run_name", "elastic"], check=True, stdout=subprocess.DEVNULL)
    killed = json.loads(out.read_text())["killed"]
    records = train_records(root / "elastic")
    seconds, restart, reached = recovery(records, killed["time"])
    reference = {r["step"]: r["loss"] for r in train_records(root / "reference")}
    final = {r["step"]: r["loss"] for r in records}
    worst = max(abs(final[s] - loss) / abs(loss) for s, loss in reference.items())
    print(f"tiny LM, {args.steps} steps, global batch 16 (2 workers x 8, then 1 worker x 2 x 8), checkpoint every "
          f"{args.val_every} steps, 3-node cluster on one machine, CPU")
    print(f"node removed after step  : {killed['at_step']}")
    print(f"recovery                 : {seconds:.1f} s from the node's removal to the first step on the nodes left")
    print(f"steps trained again      : {reached - restart + 1} (restarted at step {restart}, had reached {reached}; "
          f"checkpoint interval {args.val_every})")
    print(f"loss vs one process      : max relative difference {worst:.2e} over {len(reference)} steps")


if __name__ == "__main__":
    main()
