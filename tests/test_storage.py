"""Runs live in storage, never in the working directory: the storage-root rule (hrm_ray.storage), and one
run in an S3-compatible store (moto) trained, resumed, used as `--init_from`, evaluated and reported."""
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
    assert "resumed 'a' from" in out and "finished at step 4/4" in out
    run_a = f"{runs}/a"
    names = storage.list_names(run_a)
    assert names == ["best-model", "checkpoint_00000004", "config.yaml", "metrics.jsonl",
                     "workers.json"]  # limit 1, pruned
    steps = [json.loads(x)["step"] for x in storage.read_text(f"{run_a}/metrics.jsonl").splitlines()]
    assert steps == [2, 2, 4, 4]  # the resumed run appended to the first run's lines

    assert main(["train", *TINY, "--steps", "2", "--storage_path", runs, "--run_name", "b", "--init_from", run_a]) == 0
    assert f"initialised from {run_a}" in capsys.readouterr().out
    assert main(["eval", "--run_name", "a", "--save_dir", runs, "--max_samples", "8"]) == 0
    assert "perplexity" in capsys.readouterr().out
    assert main(["generate", "--checkpoint", run_a, "--prompt", "What is 1 + 2?", "--max_new_tokens", "4"]) == 0
    assert main(["report", run_a]) == 0
    assert "report: " in capsys.readouterr().out
    assert storage.is_file(f"{run_a}/report/report.md")
