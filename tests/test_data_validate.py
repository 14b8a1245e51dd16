"""validate names the shard and row of every problem and exits non-zero."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm_ray.commands.data import job_main
from hrm_ray.data.meta import write_meta
from hrm_ray.data.tokenizer import file_sha256, save_tokenizer, train_tokenizer
from hrm_ray.data.validate import validate_dataset
from hrm_ray.data.writer import DatasetWriter

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "ds"
    root.mkdir()
    tok = train_tokenizer(["validate these few words please"] * 5, 300, 1)
    save_tokenizer(tok, root / "tokenizer.json")
    writer = DatasetWriter(root, "parquet", rows_per_shard=50, row_group_rows=20)
    for split, n in (("train", 120), ("val", 10)):
        writer.write(split, pa.table({"encoder_ids": [[4 + i % 50, 5] for i in range(n)],
                                      "decoder_input_ids": [[1, 6, 7] for _ in range(n)],
                                      "labels": [[6, 7, 2] for _ in range(n)]}))
    writer.close()
    write_meta(root, {"vocab_size": tok.get_vocab_size(), "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_seq_len": 4,
                      "train_samples": 120, "val_samples": 10, "tokenizer_sha256": file_sha256(root / "tokenizer.json")})
    return root


def _rewrite(shard: Path, row: int, column: str, value: list[int]) -> None:
    rows = pq.read_table(shard).to_pylist()
    rows[row][column] = value
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(shard)), shard)


def test_clean_dataset_passes(dataset):
    report = validate_dataset(str(dataset))
    assert report.ok and report.rows == {"train": 120, "val": 10}, report.summary()
    assert job_main("validate", [str(dataset)]) == 0


def test_bad_token_and_misaligned_labels_name_shard_and_row(dataset):
    _rewrite(dataset / "train" / "part-00001.parquet", 37, "encoder_ids", [4, 99999])
    _rewrite(dataset / "train" / "part-00002.parquet", 5, "labels", [6, 8, 2])
    _rewrite(dataset / "val" / "part-00000.parquet", 3, "decoder_input_ids", [1, 6, 7, 7, 7])
    report = validate_dataset(str(dataset))
    assert not report.ok
    text = "\n".join(report.problems)
    assert "train/part-00001.parquet row 37: encoder_ids has token ids outside [0, " in text
    assert "train/part-00002.parquet row 5: labels not aligned with decoder_input_ids" in text
    assert "val/part-00000.parquet row 3: decoder_input_ids longer than max_seq_len 4" in text
    assert "val/part-00000.parquet row 3: labels and decoder_input_ids differ in length" in text
    done = subprocess.run([sys.executable, str(REPO / "data_jobs" / "validate_dataset.py"), str(dataset)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "INVALID" in done.stdout and "part-00001.parquet row 37" in done.stdout


def test_unreadable_shard_and_count_mismatch(dataset):
    shard = dataset / "train" / "part-00000.parquet"
    shard.write_bytes(shard.read_bytes()[:200])
    meta = json.loads((dataset / "meta.json").read_text())
    (dataset / "meta.json").write_text(json.dumps({**meta, "val_samples": 11}))
    report = validate_dataset(str(dataset))
    text = "\n".join(report.problems)
    assert "train/part-00000.parquet: cannot read after row 0" in text
    assert "val: 10 rows but meta.json says val_samples = 11" in text
    assert "train: 70 rows but meta.json says train_samples = 120" in text


def test_missing_pieces(dataset):
    (dataset / "tokenizer.json").write_text((dataset / "tokenizer.json").read_text().replace('"<pad>"', '"<pad>" ', 1))
    shutil.rmtree(dataset / "val")
    report = validate_dataset(str(dataset))
    text = "\n".join(report.problems)
    assert "tokenizer.json sha256 differs" in text and "split 'val' missing" in text
    (dataset / "meta.json").unlink()
    assert job_main("validate", [str(dataset)]) == 2  # not a dataset at all: a one-line error


def test_a_deleted_shard_is_named(dataset):
    meta = json.loads((dataset / "meta.json").read_text())
    shards = {split: sorted(p.name for p in (dataset / split).glob("*.parquet")) for split in ("train", "val")}
    (dataset / "meta.json").write_text(json.dumps({**meta, "shards": shards}))  # as `data prepare` writes it
    (dataset / "train" / "part-00001.parquet").unlink()
    report = validate_dataset(str(dataset))
    text = "\n".join(report.problems)
    assert "train/part-00001.parquet: listed in meta.json but missing" in text, text
    assert "train: 70 rows but meta.json says train_samples = 120" in text
