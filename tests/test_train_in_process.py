"""`--num_workers 0`: the loop in the calling process, no Ray Train and no Ray at all for a prepared dataset,
whose Parquet shards the task reads directly (hrm_ray.train.parquet_feed)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hrm_ray.data.meta import TRIPLET_COLUMNS
from hrm_ray.train.data_feed import GlobalBatchFeed
from hrm_ray.train.parquet_feed import parquet_batches, parquet_epochs, split_rows, table_rows, to_numpy
from tests.test_train_ray import make_prepared

REPO = Path(__file__).resolve().parents[1]


def rows_of(batch: dict) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in row) for row in batch["encoder_ids"]]


def test_an_epoch_is_every_row_once_in_full_batches_and_resumes(tmp_path):
    data = make_prepared(tmp_path, "arith", 43, 10)
    table = pq.read_table(data / "train", columns=list(TRIPLET_COLUMNS))
    expected = sorted(tuple(int(x) for x in r) for r in to_numpy(table)["encoder_ids"])
    epochs = parquet_epochs(data, "train", 8, seed=3, shuffle_buffer=16)
    first = [rows_of(to_numpy(b)) for b in epochs(0)]
    assert split_rows(data, "train") == 43 and [len(b) for b in first] == [8] * 5      # the last 3 rows dropped
    seen = [r for b in first for r in b]
    assert len(set(seen)) == 40 and set(seen) <= set(expected)
    assert [rows_of(to_numpy(b)) for b in epochs(0)] == first and [rows_of(to_numpy(b)) for b in epochs(1)] != first
    feed = GlobalBatchFeed(epochs, table_rows(lambda batch: batch), micro=4, accum=1, rank=1, world_size=2)
    feed.load_state_dict({"epoch": 0, "sample": 16})                # a resumed run, 2 workers of 4 rows each
    assert rows_of(feed.next_batch()) == first[2][4:]               # rank 1's half of the third global batch
    val = list(parquet_batches(data, "val", 4, lambda batch: batch, limit=7))
    assert [len(rows_of(b)) for b in val] == [4, 3]


SCRIPT = textwrap.dedent("""
    import sys
    import ray
    import ray.data
    from hrm_ray.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was asked to start")

    ray.init = refuse
    ray.data.read_parquet = refuse
    argv = sys.argv[1:]
    assert main([*argv, "--steps", "4"]) == 0
    assert main([*argv, "--steps", "6"]) == 0
    print("ray initialized:", ray.is_initialized())
""")


@pytest.mark.timeout(240)
def test_a_prepared_dataset_trains_and_resumes_without_ray(tmp_path):
    data = make_prepared(tmp_path, "arith", 64, 12)
    argv = ["train", "--dataset", str(data), "--num_workers", "0", "--d_model", "32", "--n_heads", "2",
            "--encoder_layers", "1", "--decoder_layers", "1", "--max_seq_len", "32", "--batch_size", "8",
            "--val_every", "2", "--log_steps", "2", "--warmup_steps", "1", "--wandb", "off",
            "--save_dir", str(tmp_path / "runs"), "--run_name", "local", "--checkpoint_limit", "2"]
    done = subprocess.run([sys.executable, "-c", SCRIPT, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=230)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "ray initialized: False" in done.stdout and "resumed 'local'" in done.stdout
    run = tmp_path / "runs" / "local"
    assert sorted(p.name for p in run.iterdir()) == ["best-model", "checkpoint_00000004", "checkpoint_00000006",
                                                     "config.yaml", "metrics.jsonl", "workers.json"]
    assert [(w["rank"], w["node_id"]) for w in json.loads((run / "workers.json").read_text())] == [(0, "")]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
    # validation read the val shard's rows: its tokens are their labels (the decoder side capped at 32)
    labels = to_numpy(pq.read_table(data / "val", columns=["labels"]))["labels"]
    tokens = sum(min(len(np.asarray(r)), 32) for r in labels)
    assert {r["tokens"] for r in records if r["split"] == "val"} == {tokens}
