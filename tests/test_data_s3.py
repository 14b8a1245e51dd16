"""A prepared dataset in an S3-compatible store (moto): `data prepare --dest s3://...` has its actors write the
shards into the bucket and the driver write meta.json last (a failed job leaves nothing), an in-process run and a
Ray Train worker (its checkpoints written by Ray into the bucket) train from `--dataset s3://...`, `data
validate`, `mix` and `merge` read (and write) s3:// datasets, and a prefix without meta.json is one error line."""
from __future__ import annotations

import json
import tempfile

import pyarrow.fs as pafs
import pytest

from hrm_ray import storage
from hrm_ray.cli import main
from hrm_ray.data import writer
from hrm_ray.data.meta import read_meta, split_files
from hrm_ray.data.prepare import PrepareConfig, prepare_language_dataset
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
    written = _record_driver_writes(monkeypatch)
    uri = f"{s3_bucket}/data/qa"
    prepare = ["data", "prepare", "--source", str(source), "--dest", uri, "--vocab-size", "300",
               "--max-seq-len", "32", "--val-ratio", "0.2", "--tokenizer-workers", "1"]
    assert main(prepare) == 0
    assert not uploaded and not any(staging.iterdir())  # the driver stages and uploads no shard: the actors do
    assert [name for name, _ in written] == ["tokenizer.json", "meta.json"]
    assert written[-1][1] == ["tokenizer.json", "train", "val"]  # meta.json last, after every shard
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


def _record_driver_writes(monkeypatch) -> list[tuple[str, list[str]]]:
    """(file name, what its dataset prefix held just before) for each whole file the driver writes to storage."""
    from hrm_ray.data import meta as meta_module
    from hrm_ray.data import prepare as prepare_module

    written: list[tuple[str, list[str]]] = []
    put = storage.write_bytes

    def recording(uri: str, data: bytes) -> None:
        written.append((uri.rsplit("/", 1)[-1], storage.list_names(uri.rsplit("/", 1)[0])))
        put(uri, data)

    for module in (storage, prepare_module):
        monkeypatch.setattr(module, "write_bytes", recording)
    monkeypatch.setattr(meta_module, "write_text", lambda uri, text: recording(uri, text.encode()))
    return written


@pytest.mark.timeout(120)
def test_data_jobs_read_and_write_bucket_datasets(ray_session, s3_bucket, tmp_path, monkeypatch, capsys):
    sources = [tmp_path / f"qa{a}.jsonl" for a in range(3)]  # a work unit each
    for a, source in enumerate(sources):
        source.write_text("".join(json.dumps({"prompt": f"What is {a} * {b}?", "response": str(a * b)}) + "\n"
                                  for b in range(20)))
    written = _record_driver_writes(monkeypatch)
    prepare = ["data", "prepare", "--vocab-size", "300", "--max-seq-len", "32", "--tokenizer-workers", "2",
               "--format", "both", "--source", *map(str, sources)]
    # a job that fails after its actors wrote their shards (a source of empty answers, found out when every unit
    # is done): everything it wrote is removed, never a meta.json
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"prompt": "What?", "response": ""}) + "\n")
    removed: list[list[str]] = []
    remove_tree = writer.remove_tree
    monkeypatch.setattr(writer, "remove_tree", lambda uri: (removed.append(storage.list_names(uri)), remove_tree(uri))[1])
    assert main([*prepare, str(empty), "--dest", f"{s3_bucket}/chunks/failed"]) == 2
    assert f"--source {empty}: no usable document" in capsys.readouterr().err
    assert removed == [[".parts", "tokenizer.json", "train"]]  # the actors' shards and JSONL parts, no meta.json
    assert [name for name, _ in written] == ["tokenizer.json"] and storage.list_names(f"{s3_bucket}/chunks") == []

    a, b = f"{s3_bucket}/chunks/a", f"{s3_bucket}/chunks/b"
    assert main([*prepare, "--dest", b, "--val-ratio", "0.2", "--seed", "1"]) == 0
    # work units of ~400 bytes on the pool's 2 actors, each uploading its units' shards and JSONL parts
    prepare_language_dataset(PrepareConfig(source=list(map(str, sources)), dest=a, vocab_size=300, max_seq_len=32,
                                           val_ratio=0.2, tokenizer_workers=2, format="both", unit_bytes=400))
    assert storage.list_names(a) == ["meta.json", "tokenizer.json", "train", "train.jsonl", "val", "val.jsonl"]
    assert len(storage.list_names(f"{a}/train")) > 3  # part-UNIT-00000.parquet, a unit each
    capsys.readouterr()
    assert main(["data", "validate", a]) == 0
    assert capsys.readouterr().out.startswith(f"OK {a}: train ")

    mixed = f"{s3_bucket}/mixed"
    assert main(["data", "mix", "--sources", a, b, "--weights", "1", "1", "--output", mixed]) == 0
    assert main(["data", "validate", mixed]) == 0
    merged, train_samples = f"{s3_bucket}/merged", read_meta(a).train_samples + read_meta(b).train_samples
    assert main(["data", "merge", "--batches", f"{s3_bucket}/chunks", "--output-dir", merged,
                 "--format", "parquet"]) == 0
    assert read_meta(merged).train_samples == train_samples
    assert storage.list_names(f"{s3_bucket}/chunks") == []  # merged and verified: the chunks are deleted
    capsys.readouterr()
    assert main(["data", "validate", merged]) == 0

    fs, path = storage.filesystem(f"{mixed}/meta.json")
    fs.delete_file(path)  # what a crash before the last write leaves
    for job in (["data", "validate", mixed], ["data", "mix", "--sources", mixed, merged, "--weights", "1", "1",
                                              "--output", f"{s3_bucket}/again"]):
        capsys.readouterr()
        assert main(job) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f"{mixed}: meta.json not found" in err
