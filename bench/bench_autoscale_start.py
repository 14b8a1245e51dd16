"""Time from submitting a run to its first training step: on a head with no worker nodes, whose autoscaler must
launch one first (Ray's fake multi-node provider, a node type of clusters/aws-gpu.yaml: tests.autoscaling_cluster),
vs the same run again on the same cluster with that node already up, side by side.

    python bench/bench_autoscale_start.py [--via job|train] [--steps 4]

`--via job` (the default): each run is `ray job submit --address <dashboard> -- python -m hrm_ray.cli train
--num_workers 1 ...` (a tiny model, synthetic data; the driver runs on the head, as a job does), the clock
running from the submit command's start to the first `step 1/` line of the job's logs it follows. `--via
train`: `hrm-ray train --address <head>` started as a process of this machine. The idle timeout is the YAML's
own (10 minutes), so the launched node is still up for the second run. The nodes are raylets of this machine,
so the launch is a process start, not a cloud VM's boot: the ratio shows the autoscaler's own part (its
update, the node's start, the run's wait), a lower bound of what a cloud adds.
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


def run_argv(head, via: str, run_dir: Path, name: str, steps: int) -> list[str]:
    train = ["--num_workers", "1", "--steps", str(steps), "--val_every", str(steps), *TINY,
             "--save_dir", str(run_dir), "--run_name", name]
    if via == "train":
        return [str(Path(sys.executable).with_name("hrm-ray")), "train", "--address", head.gcs_address, *train]
    return [str(Path(sys.executable).with_name("ray")), "job", "submit", "--address", head.dashboard_url,
            "--submission-id", name, "--", "python", "-m", "hrm_ray.cli", "train", *train]


def seconds_to_first_step(argv: list[str], name: str) -> float:
    """Seconds from starting `argv` to its first `step 1/` line (the run then finishes)."""
    for _ in range(30):  # a fresh head's job server answers before its node's agent has registered with it
        began = time.monotonic()
        proc = subprocess.Popen(argv, cwd=REPO, env=clean_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first, lines = None, []
        for line in proc.stdout:
            lines.append(line)
            if first is None and re.search(r"\bstep 1/", line):
                first = time.monotonic() - began
        if proc.wait() != 0 and "No available agent to submit job" in "".join(lines):
            time.sleep(1)
            continue
        if proc.returncode != 0 or first is None:
            raise RuntimeError(f"run {name} failed or printed no first step:\n{''.join(lines[-40:])}")
        return first
    raise RuntimeError("the head's job server found no agent for 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--via", choices=("job", "train"), default="job",
                        help="job: `ray job submit` to the head's dashboard; train: `hrm-ray train --address`")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    config = fake_config([REPO / "clusters" / "aws-gpu.yaml"], time_scale=1.0)  # idle timeout: 10 real minutes
    head = start_head(REPO, num_cpus=0, autoscaling=config, dashboard=args.via == "job")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-autoscale-") as runs:
            cold = seconds_to_first_step(run_argv(head, args.via, Path(runs), "cold", args.steps), "cold")
            launched = len(re.findall(r"Launching \d+ nodes", autoscaler_log(head)))
            warm = seconds_to_first_step(run_argv(head, args.via, Path(runs), "warm", args.steps), "warm")
            relaunched = len(re.findall(r"Launching \d+ nodes", autoscaler_log(head))) - launched
    finally:
        stop_head(head)
    print(f"via {'ray job submit' if args.via == 'job' else 'hrm-ray train --address'}")
    print(f"submission -> first training step, 0 worker nodes up (autoscaler launches {launched}): {cold:.1f} s")
    print(f"submission -> first training step, the node already up (launches {relaunched}):        {warm:.1f} s")
    print(f"ratio cold/warm: {cold / warm:.2f}x (autoscaler launch: +{cold - warm:.1f} s)")


if __name__ == "__main__":
    main()
