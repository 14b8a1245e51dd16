"""`ray job submit` of Stage A then Stage B to a Ray cluster of three nodes this test starts on loopback (`ray
start --head` and two `ray start --address` worker nodes, one CPU each, each its own raylet, ports and temp
dir), with runs in an S3-compatible bucket (moto), as a user would:

    ray job submit --address http://127.0.0.1:<dashboard> --working-dir . --no-wait -- \
        python experiments/stage_a.py --profile demo --storage_path s3://BUCKET/runs ...
    (a file added to the working directory: a new package hash)
    ray job submit ... -- python experiments/stage_b.py --profile demo --storage_path s3://BUCKET/runs ...
    ray job logs --follow ...; ray job status ...

Stage A runs in the job's driver (`--num_workers 0`: checkpoints written through hrm_ray.storage) and builds
its demo data itself (demo_data/ is git-ignored, so it is not uploaded) outside the uploaded package
(`_ray_pkg_<hash>/`); copied into the bucket, it is Stage B's `--dataset s3://...`. Stage B runs two Ray Train
workers SPREAD over the worker nodes (the job's package fetched from the GCS by each node), fed by Ray Data
reading the bucket on the CPU left (the cluster's 3 CPUs, all planned: nothing pending), from Stage A's best
model in the bucket, found by its run name whatever the package's hash; Ray writes its checkpoints into the
bucket. Meanwhile a user's own `hrm-ray train` starts its own
local Ray beside this cluster: it neither attaches to it nor warns of "multiple active Ray instances". Each
node is stopped by its own process group, never with `ray stop`, which would take down every Ray instance
on the machine.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hrm_ray import storage as storage_lib
from tests.ray_heads import BIN, add_worker_nodes, alive_nodes, clean_env, start_head, stop_head

REPO = Path(__file__).resolve().parents[1]


TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
        "--max_seq_len", "32", "--batch_size", "8", "--eval_batch_size", "16", "--warmup_steps", "1",
        "--synthetic_train_size", "64", "--synthetic_val_size", "16", "--log_steps", "1"]
RAY_CHATTER = ("Execution plan of Dataset", "Starting execution of Dataset", "Estimated parquet",
               "Requesting resources", "Setting up process group", "Reporting training result",
               "Progress bars disabled", "RayDeprecationWarning", "Connecting to existing Ray cluster", "Traceback",
               "(raylet)", "TrainController")


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


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(540)
def test_stage_a_then_b_through_ray_job_submit_with_runs_in_a_bucket(tmp_path, s3_bucket, monkeypatch):
    storage = f"{s3_bucket}/runs"
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))  # where a job with a remote storage root builds demo data
    workdir = working_copy(tmp_path / "checkout")
    env = clean_env()
    head = start_head(tmp_path, num_cpus=1, dashboard=True)  # its processes, hence the jobs, get the bucket's env
    common = ["--profile", "demo", "--val_every", "2", "--batch_size", "8", "--storage_path", storage]
    beside = None
    try:
        add_worker_nodes(head, tmp_path, 2)  # they join while Stage A runs in the job's driver on the head
        beside = subprocess.Popen(  # meanwhile, a user's own run, with its own local Ray, beside this head
            [sys.executable, "-m", "hrm_ray.cli", "train", "--dataset", "synthetic", "--num_workers", "1",
             "--steps", "2", "--val_every", "2", "--save_dir", str(tmp_path / "runs"), "--run_name", "beside", *TINY],
            env=clean_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        logs_a = submit(head.dashboard_url, workdir, env, "stage-a", [
            "experiments/stage_a.py", *common, "--steps", "2", "--log_steps", "1", "--max_val_samples", "16",
            "--num_workers", "0"])
        assert "building demo data" in logs_a and "run 'demo-stage-a' finished at step 2/2" in logs_a
        (workdir / "notes.txt").write_text("a file the user added between the stages\n")  # a new package hash
        language = home / "hrm-ray" / "demo_data" / "language"  # what Stage A built (not in its package)
        assert (language / "meta.json").is_file() and not list(workdir.glob("**/demo_data"))
        dataset = f"{s3_bucket}/data/language"  # Stage B trains from the bucket, as on a cluster (docs/clusters.md)
        storage_lib.upload(language, dataset, last="meta.json")
        nodes = alive_nodes(head, expect=3)
        logs_b = submit(head.dashboard_url, workdir, env, "stage-b", [
            "experiments/stage_b.py", *common, "--steps", "2", "--log_steps", "1", "--max_val_samples", "32",
            "--num_workers", "2", "--cpus_per_worker", "1", "--placement_strategy", "SPREAD",
            "--dataset", dataset])
        output = beside.communicate(timeout=170)[0]  # it ran beside both stages
        assert beside.returncode == 0, output[-3000:]
        assert "multiple active Ray instances" not in output and "Traceback" not in output, output[-3000:]
        assert (tmp_path / "runs" / "beside" / "checkpoint_00000002").is_dir()
    finally:
        if beside is not None and beside.poll() is None:
            beside.kill()
        stop_head(head)
    assert "building demo data" not in logs_b  # its dataset is in the bucket: nothing to build
    assert f"initialised from {storage}/demo-stage-a" in logs_b  # found in the bucket by its run name
    # planned against the cluster's 3 CPUs: the workers' 2, Ray Data the one they leave (hrm_ray.train.resources)
    assert "resources: 2 workers x 1 CPU + Ray Data" in logs_b and "on a cluster of 3 CPUs" in logs_b
    ranks = json.loads(storage_lib.read_text(f"{storage}/demo-stage-b/workers.json"))
    assert len({r["node_id"] for r in ranks}) == 2 and {r["node_id"] for r in ranks} <= set(nodes)
    assert "run 'demo-stage-b' finished at step 2/2" in logs_b
    assert "step 1/2" in logs_b and "val @ step 2" in logs_b  # progress and evaluations shown
    for stage, step in (("demo-stage-a", 2), ("demo-stage-b", 2)):
        run = f"{storage}/{stage}"
        names = storage_lib.list_names(run)
        assert {"best-model", "metrics.jsonl", "config.yaml", f"checkpoint_{step:08d}"} <= set(names), names
        assert {"state.pt", "meta.json"} <= set(storage_lib.list_names(f"{run}/checkpoint_{step:08d}"))
