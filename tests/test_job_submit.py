"""`ray job submit` of Stage B against a head node this test starts on loopback, as a user would:

    ray start --head --dashboard-host 127.0.0.1 ...      (its own ports and temp dir)
    ray job submit --address http://127.0.0.1:<dashboard> --working-dir . --no-wait -- \
        python experiments/stage_b.py --profile demo --steps 4 ...
    ray job logs --follow ...; ray job status ...

The job builds the demo data itself (demo_data/ is git-ignored, so it is not uploaded) under its storage
root, never inside the uploaded package (`_ray_pkg_<hash>/`), and writes its run to a temporary storage
path. The head node is stopped by its own process id, never with
`ray stop`, which would take down every Ray instance on the machine.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.ray_heads import BIN, clean_env, start_head, stop_head

REPO = Path(__file__).resolve().parents[1]


RAY_CHATTER = ("Execution plan of Dataset", "Starting execution of Dataset", "Estimated parquet",
               "Requesting resources", "Setting up process group", "Reporting training result",
               "Progress bars disabled", "RayDeprecationWarning", "Connecting to existing Ray cluster")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_stage_b_through_ray_job_submit_to_a_local_head_node(tmp_path):
    storage = tmp_path / "runs"
    env = clean_env()
    head = start_head(tmp_path, num_cpus=4, dashboard=True)
    address = head.dashboard_url
    try:
        ray = [str(BIN / "ray"), "job"]
        submit = subprocess.run(
            [*ray, "submit", "--address", address, "--working-dir", ".", "--submission-id", "stage-b-demo",
             "--no-wait", "--", "python", "experiments/stage_b.py", "--profile", "demo", "--steps", "4",
             "--val_every", "2", "--log_steps", "2", "--batch_size", "8", "--max_val_samples", "32",
             "--cpus_per_worker", "1", "--init_from=", "--storage_path", str(storage)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        logs = subprocess.run([*ray, "logs", "--address", address, "--follow", "stage-b-demo"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=360)
        status = subprocess.run([*ray, "status", "--address", address, "stage-b-demo"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert "succeeded" in status.stdout.lower(), logs.stdout[-4000:] + status.stdout + status.stderr
        assert "building demo data" in logs.stdout  # the job built its own data
        # planned against the head's 4 CPUs: the worker's 1, Ray Data the 3 it leaves (hrm_ray.train.resources)
        assert "resources: 1 worker x 1 CPU + Ray Data (tasks of 1 CPU, at most 3 at once) on a cluster of 4 CPUs" \
            in logs.stdout
        assert "run 'demo-stage-b' finished at step 4/4" in logs.stdout
        assert "step 4/4" in logs.stdout and "val @ step 4" in logs.stdout  # progress and evaluations shown
        for chatter in RAY_CHATTER:  # Ray's own INFO lines went to its log files
            assert chatter not in logs.stdout, chatter
        assert (storage / "demo_data" / "math" / "meta.json").is_file()  # not in the job's package
        run_dir = storage / "demo-stage-b"
        checkpoint = run_dir / "checkpoint_00000004"
        assert (checkpoint / "state.pt").is_file() and (checkpoint / "meta.json").is_file()
        assert (run_dir / "best-model" / "model.pt").is_file() and (run_dir / "metrics.jsonl").is_file()
    finally:
        stop_head(head)
