"""`ray job submit` of Stage A then Stage B to a real 3-node Ray cluster on this machine (a 2-CPU head with the
job server, two worker nodes of 1 CPU; tests/multinode_run.py --serve), with runs in an S3-compatible bucket
(moto), as a user would:

    ray job submit --address http://127.0.0.1:<dashboard> --working-dir . --no-wait -- \
        python experiments/stage_a.py --profile demo --storage_path s3://BUCKET/runs ...
    (a file added to the working directory: a new package hash)
    ray job submit ... -- python experiments/stage_b.py --profile demo --storage_path s3://BUCKET/runs \
        --num_workers 2 --placement_strategy SPREAD ...
    ray job logs --follow ...; ray job status ...

Stage A runs in the job's driver (`--num_workers 0`: checkpoints written through hrm_ray.storage), Stage B
with two Ray Train workers on two nodes (checkpoints written by Ray into the bucket) from Stage A's best
model in the bucket, found by its run name whatever the package's hash. The jobs build the demo data
themselves (demo_data/ is git-ignored, so it is not uploaded), never inside the uploaded package
(`_ray_pkg_<hash>/`). The cluster is this test's own process group, never stopped with `ray stop`.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrm_ray import storage as storage_lib
from tests.ray_heads import BIN, clean_env, free_ports

MULTINODE = Path(__file__).with_name("multinode_run.py")

REPO = Path(__file__).resolve().parents[1]


RAY_CHATTER = ("Execution plan of Dataset", "Starting execution of Dataset", "Estimated parquet",
               "Requesting resources", "Setting up process group", "Reporting training result",
               "Progress bars disabled", "RayDeprecationWarning", "Connecting to existing Ray cluster")


def submit(address: str, workdir: Path, env: dict[str, str], job_id: str, argv: list[str]) -> str:
    """`ray job submit --no-wait`, then its logs followed to the end; the logs (the job must succeed)."""
    ray = [str(BIN / "ray"), "job"]
    for _ in range(30):  # a fresh head's job server answers before its node's agent has registered with it
        submitted = subprocess.run([*ray, "submit", "--address", address, "--working-dir", ".", "--submission-id",
                                    job_id, "--no-wait", "--", "python", *argv],
                                   cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
        if "No available agent to submit job" not in submitted.stderr:
            break
        time.sleep(1)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    logs = subprocess.run([*ray, "logs", "--address", address, "--follow", job_id],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=360)
    status = subprocess.run([*ray, "status", "--address", address, job_id],
                            cwd=workdir, env=env, capture_output=True, text=True, timeout=60)
    assert "succeeded" in status.stdout.lower(), logs.stdout[-4000:] + status.stdout + status.stderr
    for chatter in RAY_CHATTER:  # Ray's own INFO lines went to its log files
        assert chatter not in logs.stdout, chatter
    return logs.stdout


def working_copy(dest: Path) -> Path:
    """The repository's files that git does not ignore (what `--working-dir .` uploads), as a user's checkout."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True)
    for name in filter(None, files.stdout.split("\0")):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@contextlib.contextmanager
def served_cluster(env: dict[str, str]):
    """tests/multinode_run.py --serve in its own process group: yields the job server's URL; the cluster goes
    down when its stdin closes (killed with its group if it does not)."""
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, str(MULTINODE), "--head_cpus", "2", "--serve", str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line, "the cluster did not come up"
        yield json.loads(line)["dashboard"]
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(540)
def test_stage_a_then_b_through_ray_job_submit_on_a_cluster_with_runs_in_a_bucket(tmp_path, s3_bucket, monkeypatch):
    storage = f"{s3_bucket}/runs"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where a job with a remote storage root builds demo data
    workdir = working_copy(tmp_path / "checkout")
    env = clean_env()  # the cluster's processes, hence the jobs, get the bucket's endpoint and credentials
    common = ["--profile", "demo", "--val_every", "2", "--batch_size", "8", "--storage_path", storage]
    with served_cluster(env) as address:
        logs_a = submit(address, workdir, env, "stage-a", [
            "experiments/stage_a.py", *common, "--steps", "2", "--log_steps", "1", "--max_val_samples", "16",
            "--num_workers", "0"])
        assert "building demo data" in logs_a and "run 'demo-stage-a' finished at step 2/2" in logs_a
        (workdir / "notes.txt").write_text("a file the user added between the stages\n")  # a new package hash
        logs_b = submit(address, workdir, env, "stage-b", [
            "experiments/stage_b.py", *common, "--steps", "4", "--log_steps", "2", "--max_val_samples", "32",
            "--num_workers", "2", "--cpus_per_worker", "1", "--placement_strategy", "SPREAD"])
    assert f"initialised from {storage}/demo-stage-a" in logs_b  # found in the bucket by its run name
    assert "resources: 2 workers x 1 CPU + Ray Data" in logs_b and "on a cluster of 4 CPUs" in logs_b
    assert "run 'demo-stage-b' finished at step 4/4" in logs_b
    assert "step 4/4" in logs_b and "val @ step 4" in logs_b  # progress and evaluations shown
    for stage, step in (("demo-stage-a", 2), ("demo-stage-b", 4)):
        run = f"{storage}/{stage}"
        names = storage_lib.list_names(run)
        assert {"best-model", "metrics.jsonl", "config.yaml", f"checkpoint_{step:08d}"} <= set(names), names
        assert {"state.pt", "meta.json"} <= set(storage_lib.list_names(f"{run}/checkpoint_{step:08d}"))
    workers = json.loads(storage_lib.read_text(f"{storage}/demo-stage-b/workers.json"))
    assert len({w["node_id"] for w in workers}) == 2  # SPREAD: the two ranks on two nodes
    assert (tmp_path / "home" / "hrm-ray").is_dir() and not list(workdir.glob("**/demo_data"))  # not in a package
