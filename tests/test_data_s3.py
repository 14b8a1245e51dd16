"""A prepared dataset in an S3-compatible store (moto): `data prepare --dest s3://...` uploads it with
meta.json last, an in-process run and a Ray Train worker (its checkpoints written by Ray into the bucket) train
from `--dataset s3://...`, and a missing URI is one error line."""
from __future__ import annotations

import json
import tempfile

import pyarrow.fs as pafs
import pytest

from hrm_ray import storage
from hrm_ray.cli import main
from hrm_ray.data.meta import read_meta, split_files
from tests.test_storage import TINY


@pytest.mark.timeout(120)
def test_prepare_into_a_bucket_and_train_from_it(ray_session, s3_bucket, tmp_path, monkeypatch, capsys):
    source = tmp_path / "qa.jsonl"
    source.write_text("".join(json.dumps({"prompt": f"What is {a} + {b}?", "response": str(a + b)}) + "\n"
                              for a in range(12) for b in range(8)))
    staging = tmp_path / "tmp"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    uploaded: list[str] = []
    copy = pafs.copy_files
    monkeypatch.setattr(pafs, "copy_files", lambda src, dst, **kw: (uploaded.append(dst), copy(src, dst, **kw)))
    uri = f"{s3_bucket}/data/qa"
    prepare = ["data", "prepare", "--source", str(source), "--dest", uri, "--vocab-size", "300",
               "--max-seq-len", "32", "--val-ratio", "0.2", "--tokenizer-workers", "1"]
    assert main(prepare) == 0
    assert uploaded[-1].endswith("/qa/meta.json") and len(uploaded) == 4  # tokenizer.json, train/, val/, meta.json
    assert not any(staging.iterdir())  # the local staging directory is gone
    meta = read_meta(uri)
    assert storage.list_names(uri) == ["meta.json", "tokenizer.json", "train", "val"]
    assert meta.train_samples > 0 and all(f.startswith(f"{uri}/train/") for f in split_files(uri, "train"))
    capsys.readouterr()

    assert main(prepare) == 2  # an existing dataset is refused, as a local --dest is
    assert "already exists and is not empty (pass --overwrite" in capsys.readouterr().err

    run = ["train", *TINY, "--steps", "2", "--max_seq_len", "32", "--batch_size", "8", "--run_name", "from-s3"]
    assert main([*run, "--dataset", uri]) == 0
    assert "finished at step 2/2" in capsys.readouterr().out
    # a Ray Train worker reads it through Ray Data and Ray writes the checkpoints into the bucket
    runs = f"{s3_bucket}/runs"
    assert main([*run, "--dataset", uri, "--num_workers", "1", "--storage_path", runs]) == 0
    assert "finished at step 2/2" in capsys.readouterr().out
    assert {"checkpoint_00000002", "best-model", "metrics.jsonl"} <= set(storage.list_names(f"{runs}/from-s3"))
    assert "state.pt" in storage.list_names(f"{runs}/from-s3/checkpoint_00000002")

    assert main([*run, "--dataset", f"{s3_bucket}/data/missing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{s3_bucket}/data/missing: meta.json not found" in err
