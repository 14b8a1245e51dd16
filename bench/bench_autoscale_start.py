"""Time from submitting a run to its first training step: on a head with no worker nodes, whose autoscaler must
launch one first (Ray's fake multi-node provider, a node type of clusters/aws-gpu.yaml: tests.autoscaling_cluster),
vs the same run again on the same cluster with that node already up, side by side.

    python bench/bench_autoscale_start.py [--steps 4]

Each run is `hrm-ray train --address <head> --num_workers 1` (a tiny model, synthetic data) started as its own
process; the clock stops at the first `step 1/` line it prints. The idle timeout is the YAML's own (10 minutes),
so the launched node is still up for the second run. The nodes are raylets of this machine, so the launch is
a process start, not a cloud VM's boot: the ratio shows the autoscaler's own part (its update, the node's
start, the run's wait), a lower bound of what a cloud adds.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tests.autoscaling_cluster import fake_config  # noqa: E402
from tests.ray_heads import autoscaler_log, clean_env, start_head, stop_head  # noqa: E402

TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
        "--synthetic_train_size", "64", "--synthetic_val_size", "16", "--batch_size", "16", "--log_steps", "1"]


def seconds_to_first_step(head, run_dir: Path, name: str, steps: int) -> float:
    """Seconds from starting `hrm-ray train` against `head` to its first `step 1/` line (the run then finishes)."""
    argv = [str(Path(sys.executable).with_name("hrm-ray")), "train", "--address", head.gcs_address,
            "--num_workers", "1", "--steps", str(steps), "--val_every", str(steps), *TINY,
            "--save_dir", str(run_dir), "--run_name", name]
    began = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, env=clean_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first, lines = None, []
    for line in proc.stdout:
        lines.append(line)
        if first is None and re.search(r"\bstep 1/", line):
            first = time.monotonic() - began
    if proc.wait() != 0 or first is None:
        raise RuntimeError(f"run {name} failed or printed no first step:\n{''.join(lines[-40:])}")
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    config = fake_config([REPO / "clusters" / "aws-gpu.yaml"], time_scale=1.0)  # idle timeout: 10 real minutes
    head = start_head(REPO, num_cpus=0, autoscaling=config)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-autoscale-") as runs:
            cold = seconds_to_first_step(head, Path(runs), "cold", args.steps)
            launched = len(re.findall(r"Launching \d+ nodes", autoscaler_log(head)))
            warm = seconds_to_first_step(head, Path(runs), "warm", args.steps)
            relaunched = len(re.findall(r"Launching \d+ nodes", autoscaler_log(head))) - launched
    finally:
        stop_head(head)
    print(f"submission -> first training step, 0 worker nodes up (autoscaler launches {launched}): {cold:.1f} s")
    print(f"submission -> first training step, the node already up (launches {relaunched}):        {warm:.1f} s")
    print(f"ratio cold/warm: {cold / warm:.2f}x (autoscaler launch: +{cold - warm:.1f} s)")


if __name__ == "__main__":
    main()
