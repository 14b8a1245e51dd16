"""Mixing (exact quotas, reuse, errors, on-the-fly streaming mix), merging chunks, ingest of
both layouts through iter_torch_batches."""
from __future__ import annotations

import argparse
import json
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hrm_ray.commands import data as data_cmd
from hrm_ray.data.ingest import IGNORE_INDEX, TripletCollate, load_prepared_split, mix_datasets, read_meta
from hrm_ray.data.merge import merge_prepared_batches
from hrm_ray.data.meta import write_meta
from hrm_ray.data.mix import mix_prepared
from hrm_ray.data.tokenizer import save_tokenizer, train_tokenizer
from hrm_ray.data.validate import validate_dataset
from hrm_ray.data.writer import DatasetWriter, atomic_dir
from hrm_ray.errors import UserError

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("toks")
    a = root / "a.json"
    b = root / "b.json"
    save_tokenizer(train_tokenizer(["alpha beta gamma delta"] * 10, 300, 1), a)
    save_tokenizer(train_tokenizer(["some other corpus entirely"] * 10, 300, 1), b)
    return a, b


def make_prepared(root: Path, tag: int, n_train: int, n_val: int, tokenizer: Path, fmt: str = "parquet") -> Path:
    """A prepared dataset whose rows say where they came from: encoder_ids = [4 + tag, 4 + i]."""
    with atomic_dir(root) as tmp:
        writer = DatasetWriter(tmp, fmt, rows_per_shard=64, row_group_rows=16)
        for split, n in (("train", n_train), ("val", n_val)):
            writer.write(split, pa.table({
                "encoder_ids": [[4 + tag, 4 + i] for i in range(n)],
                "decoder_input_ids": [[1, 5 + i % 3] for i in range(n)],
                "labels": [[5 + i % 3, 2] for i in range(n)],
            }))
        writer.close()
        shutil.copyfile(tokenizer, tmp / "tokenizer.json")
        from hrm_ray.data.tokenizer import file_sha256, load_tokenizer

        write_meta(tmp, {"vocab_size": load_tokenizer(tokenizer).get_vocab_size(), "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_seq_len": 8,
                         "train_samples": n_train, "val_samples": n_val,
                         "tokenizer_sha256": file_sha256(tokenizer), "counts": {"documents_read": n_train + n_val}})
    return root


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tokenizers):
    root = tmp_path_factory.mktemp("sources")
    return [make_prepared(root / name, tag, n_train, n_val, tokenizers[0])
            for name, tag, n_train, n_val in (("A", 0, 200, 40), ("B", 1, 50, 10), ("C", 2, 20, 5))]


def _rows(path: Path, split: str) -> list[dict]:
    return pq.read_table(sorted((path / split).glob("*.parquet"))).to_pylist()


def test_mix_quotas_are_exact_and_reported(sources, tmp_path):
    paths = [str(s) for s in sources]
    report = mix_prepared(paths, [0.90, 0.05, 0.05], str(tmp_path / "mix"), train_samples=100,
                          val_samples=20, seed=3)
    rows = _rows(tmp_path / "mix", "train")
    assert Counter(r["source"] for r in rows) == {paths[0]: 90, paths[1]: 5, paths[2]: 5}
    assert Counter(r["source"] for r in _rows(tmp_path / "mix", "val")) == {paths[0]: 18, paths[1]: 1, paths[2]: 1}
    keys = [tuple(r["encoder_ids"]) for r in rows]
    assert len(set(keys)) == len(keys)  # no source exhausted: sampled without replacement
    assert [r["source"] for r in rows[:90]] != [paths[0]] * 90  # shuffled, not concatenated
    meta = read_meta(tmp_path / "mix")
    assert meta.train_samples == 100 and meta.val_samples == 20
    assert [s["realised"] for s in meta.raw["mix"]["train"]] == [90, 5, 5]
    assert [s["weight"] for s in meta.raw["sources"]] == [0.90, 0.05, 0.05]
    assert validate_dataset(str(tmp_path / "mix")).ok
    assert "reused" not in report.summary()
    again = mix_prepared(paths, [0.90, 0.05, 0.05], str(tmp_path / "mix2"), 100, 20, seed=3)
    assert again.splits["train"]["total"] == 100
    assert _rows(tmp_path / "mix2", "train") == rows  # same seed, same mixture


def test_mix_reuses_an_exhausted_source(sources, tmp_path):
    paths = [str(sources[0]), str(sources[2])]
    report = mix_prepared(paths, [1, 1], str(tmp_path / "mix"), train_samples=100, val_samples=4)
    rows = _rows(tmp_path / "mix", "train")
    from_c = [tuple(r["encoder_ids"]) for r in rows if r["source"] == paths[1]]
    assert len(from_c) == 50 and len(set(from_c)) == 20  # every C sample used, then 30 reused
    assert report.splits["train"]["sources"][1]["reused"] == 30
    assert "reused 30" in report.summary()


def test_mix_errors(sources, tokenizers, tmp_path):
    paths = [str(s) for s in sources]
    with pytest.raises(UserError, match="2 weights for 3 sources"):
        mix_prepared(paths, [0.5, 0.5], str(tmp_path / "o"))
    with pytest.raises(UserError, match="must be a finite number >= 0"):
        mix_prepared(paths, [0.5, -0.5, 1], str(tmp_path / "o"))
    with pytest.raises(UserError, match="all weights are zero"):
        mix_prepared(paths, [0, 0, 0], str(tmp_path / "o"))
    other = make_prepared(tmp_path / "other", 3, 10, 2, tokenizers[1])
    with pytest.raises(UserError, match="different tokenizers"):
        mix_prepared([paths[0], str(other)], [1, 1], str(tmp_path / "o"))
    no_val = make_prepared(tmp_path / "noval", 4, 10, 2, tokenizers[0])
    shutil.rmtree(no_val / "val")
    with pytest.raises(UserError, match="split 'val' missing"):
        mix_prepared([paths[0], str(no_val)], [1, 1], str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
    # the CLI and the job script parse the same flags; merge_prepared_batches.py --sources runs mix mode
    parser = argparse.ArgumentParser()
    data_cmd.configure(parser)
    args = parser.parse_args(["mix", "--sources", *paths, "--weights", "1", "2", "--output", str(tmp_path / "o")])
    with pytest.raises(UserError, match="2 weights for 3 sources"):
        data_cmd.run(args)
    assert data_cmd.job_main("merge", ["--sources", *paths, "--weights", "1", "--output", str(tmp_path / "o")]) == 2


def test_on_the_fly_mix_streams_exact_proportions(ray_session, sources):
    specs = [(str(sources[0]), 0.9), (str(sources[1]), 0.1)]
    ds, info = mix_datasets(specs, "train", seed=1)
    assert info["total"] == 222 and [s["quota"] for s in info["sources"]] == [200, 22]
    counts = torch.zeros(2, dtype=torch.long)
    rows = 0
    for batch in ds.iter_torch_batches(batch_size=32, collate_fn=TripletCollate(pad_id=0),
                                       local_shuffle_buffer_size=64):
        counts += torch.bincount(batch["source_id"], minlength=2)
        rows += batch["encoder_ids"].shape[0]
    assert rows == 222 and counts.tolist() == [200, 22]
    _, info = mix_datasets(specs, "val", seed=1, num_samples=100)
    assert [s["quota"] for s in info["sources"]] == [90, 10] and [s["reused"] for s in info["sources"]] == [50, 0]


def test_merge_verifies_then_deletes_chunks(tokenizers, tmp_path):
    batches = tmp_path / "batches"
    batches.mkdir()
    for i, (n_train, n_val) in enumerate([(30, 3), (70, 7), (1, 0)]):
        make_prepared(batches / f"chunk{i}", i, n_train, n_val, tokenizers[0])
    keep = merge_prepared_batches(str(batches), str(tmp_path / "kept"), keep_chunks=True)
    assert keep.samples == {"train": 101, "val": 10} and not keep.deleted
    assert len(list(batches.iterdir())) == 3
    meta = read_meta(tmp_path / "kept")
    assert meta.train_samples == 101 and meta.raw["counts"]["documents_read"] == 111
    assert validate_dataset(str(tmp_path / "kept")).ok
    first_rows = _rows(tmp_path / "kept", "train")
    assert [r["encoder_ids"] for r in first_rows[:2]] == [[4, 4], [4, 5]] and first_rows[30]["encoder_ids"] == [5, 4]

    broken = json.loads((batches / "chunk1" / "meta.json").read_text())
    (batches / "chunk1" / "meta.json").write_text(json.dumps({**broken, "train_samples": 71}))
    with pytest.raises(UserError, match="count mismatch"):
        merge_prepared_batches(str(batches), str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists() and len(list(batches.iterdir())) == 3
    (batches / "chunk1" / "meta.json").write_text(json.dumps(broken))

    done = merge_prepared_batches(str(batches), str(tmp_path / "merged"))
    assert done.deleted and not list(batches.iterdir())
    assert _rows(tmp_path / "merged", "train") == first_rows


def test_merge_and_ingest_of_the_seed_jsonl_layout(ray_session, tokenizers, tmp_path):
    batches = tmp_path / "batches"
    batches.mkdir()
    for i in range(2):
        make_prepared(batches / f"c{i}", i, 20, 4, tokenizers[0], fmt="jsonl")
    merge_prepared_batches(str(batches), str(tmp_path / "seed"), keep_chunks=True)
    assert (tmp_path / "seed" / "train.jsonl").is_file() and not (tmp_path / "seed" / "train").exists()
    meta = json.loads((tmp_path / "seed" / "meta.json").read_text())
    for key in ("bos_id", "eos_id"):  # the seed's meta.json may lack them: read from tokenizer.json
        meta.pop(key)
    (tmp_path / "seed" / "meta.json").write_text(json.dumps(meta))
    info = read_meta(tmp_path / "seed")
    assert (info.layout, info.bos_id, info.eos_id, info.train_samples) == ("jsonl", 1, 2, 40)
    ds = load_prepared_split(str(tmp_path / "seed"), "val")
    batches_seen = list(ds.iter_torch_batches(batch_size=5, collate_fn=TripletCollate(info.pad_id, 8)))
    assert sum(b["encoder_ids"].shape[0] for b in batches_seen) == 8
    assert validate_dataset(str(tmp_path / "seed")).ok


def test_streaming_ingest_batches(ray_session, tmp_path, tokenizers):
    path = make_prepared(tmp_path / "d", 0, 150, 10, tokenizers[0])
    meta = read_meta(path)
    ds = load_prepared_split(str(path), "train")
    seen = 0
    for batch in ds.iter_torch_batches(batch_size=32, collate_fn=TripletCollate(meta.pad_id, meta.max_seq_len)):
        b = batch["encoder_ids"].shape[0]
        assert batch["encoder_ids"].shape == batch["encoder_mask"].shape == (b, 2)
        assert batch["decoder_input_ids"].shape == batch["labels"].shape == batch["decoder_mask"].shape == (b, 2)
        assert batch["encoder_mask"].all() and batch["labels"].dtype == torch.long
        assert (batch["decoder_input_ids"][:, 0] == meta.bos_id).all()
        assert not (batch["labels"] == IGNORE_INDEX).any()  # equal lengths: nothing padded
        seen += b
    assert seen == 150
    with pytest.raises(UserError, match="split 'val' missing"):
        shutil.rmtree(path / "val")
        load_prepared_split(str(path), "val")


def test_jsonl_export_import_roundtrip(tokenizers, tmp_path):
    from hrm_ray.data.jsonl_io import convert_layout

    src = make_prepared(tmp_path / "p", 0, 30, 5, tokenizers[0])
    assert convert_layout(src, tmp_path / "seed", "jsonl") == {"train": 30, "val": 5}
    assert json.loads((tmp_path / "seed" / "train.jsonl").read_text().splitlines()[2]) == \
        {"encoder_ids": [4, 6], "decoder_input_ids": [1, 7], "labels": [7, 2]}
    convert_layout(tmp_path / "seed", tmp_path / "back", "parquet")
    assert _rows(tmp_path / "back", "train") == _rows(src, "train")
    assert validate_dataset(str(tmp_path / "seed")).ok and validate_dataset(str(tmp_path / "back")).ok
