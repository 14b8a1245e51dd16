"""Runs live in storage, never in the working directory: the storage-root rule (hrm_ray.storage), one run in
an S3-compatible store (moto) trained, resumed, used as `--init_from`, evaluated and reported, and a driver
killed mid-run that resumes from the bucket."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrm_ray import storage
from hrm_ray.cli import main
from hrm_ray.errors import UserError

TINY = ["--num_workers", "0", "--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1",
        "--synthetic_train_size", "128", "--synthetic_val_size", "16", "--batch_size", "16", "--val_every", "2",
        "--log_steps", "2", "--wandb", "off", "--checkpoint_limit", "1"]


def test_storage_root_rule_in_and_outside_a_job_package(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_JOB_ID", raising=False)
    monkeypatch.delenv(storage.STORAGE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert storage.resolve_root("") == (str(Path("~/hrm-ray/runs").expanduser()), None)  # never the cwd
    assert storage.resolve_root("rel") == (str(tmp_path / "rel"), None)  # the user's directory
    assert storage.resolve_root("s3://b/x")[0] == "s3://b/x"
    monkeypatch.setenv(storage.STORAGE_ENV, str(tmp_path / "store"))
    assert storage.resolve_root("")[0] == str(tmp_path / "store")
    package = tmp_path / "_ray_pkg_0123abcd"
    (package / "data").mkdir(parents=True)
    monkeypatch.chdir(package)
    root, note = storage.resolve_root("runs")
    assert root == str(tmp_path / "store" / "runs") and "Ray job's package" in note and root in note
    assert storage.resolve_input("data", "--dataset") == str(package / "data")  # shipped with the package
    with pytest.raises(UserError, match="--init_from missing/run: .*absolute path or an s3://"):
        storage.resolve_input("missing/run", "--init_from")
    assert storage.built_data_path("demo_data/math", root) == str(Path(root, "demo_data", "math"))


@pytest.mark.timeout(120)
def test_an_lm_run_in_s3_resumes_and_serves_init_from_eval_generate_and_report(s3_bucket, capsys):
    runs = f"{s3_bucket}/runs"
    assert main(["train", *TINY, "--steps", "2", "--storage_path", runs, "--run_name", "a"]) == 0
    assert main(["train", *TINY, "--steps", "4", "--storage_path", runs, "--run_name", "a"]) == 0
    out = capsys.readouterr().out
    assert f"resumed 'a' from {runs}/a/checkpoint_00000002 at step 2" in out and "finished at step 4/4" in out
    run_a = f"{runs}/a"
    names = storage.list_names(run_a)
    assert names == ["best-model", "checkpoint_00000004", "config.yaml", "metrics.jsonl",
                     "workers.json"]  # limit 1, pruned
    records = [json.loads(x) for x in storage.read_text(f"{run_a}/metrics.jsonl").splitlines()]
    # the resumed run appended to the first run's lines; each run counts its first step's FLOPs
    assert [(r["step"], r["split"]) for r in records] == [(1, "flops"), (2, "train"), (2, "val"), (3, "flops"),
                                                          (4, "train"), (4, "val")]

    assert main(["train", *TINY, "--steps", "2", "--storage_path", runs, "--run_name", "b", "--init_from", run_a]) == 0
    assert f"initialised from {run_a}" in capsys.readouterr().out
    assert main(["eval", "--run_name", "a", "--save_dir", runs, "--max_samples", "8"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["generate", "--checkpoint", run_a, "--prompt", "What is 1 + 2?", "--max_new_tokens", "4"]) == 0
    assert main(["report", run_a]) == 0
    assert "report: " in capsys.readouterr().out
    assert storage.is_file(f"{run_a}/report/report.md")


@pytest.mark.timeout(180)
def test_a_killed_driver_resumes_from_the_bucket(s3_bucket, tmp_path):
    """`hrm-ray train` killed (SIGKILL) once its first checkpoint is in the bucket; run again, it resumes
    from the bucket and finishes; nothing half written looks complete."""
    import signal
    import subprocess
    import sys
    import time

    from hrm_ray.train.checkpoint import CheckpointStore

    run = f"{s3_bucket}/runs/killed"

    def argv(steps: int) -> list[str]:
        return [sys.executable, "-m", "hrm_ray.cli", "train", *TINY, "--steps", str(steps), "--storage_path",
                f"{s3_bucket}/runs", "--run_name", "killed", "--checkpoint_limit", "3"]

    proc = subprocess.Popen(argv(400), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not CheckpointStore(run, 0).names() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    kept = CheckpointStore(run, 0).complete()
    assert kept and kept[-1][1]["step"] < 400  # killed mid-run, with a complete checkpoint in the bucket
    step = kept[-1][1]["step"]
    again = subprocess.run(argv(step + 4), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed 'killed' from" in again.stdout and f"at step {step}" in again.stdout
    assert CheckpointStore(run, 0).complete()[-1][1]["step"] == step + 4
