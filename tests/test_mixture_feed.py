"""A weighted mixture holds its weights in every window of 10 steps on every rank (1 worker, 2 workers, an
elastic resize from 2 to 1), the logged `mix_<source>` is the global batch's, and 2 workers on two nodes of a
3-node cluster log the weights from the first steps (the union stream this replaces gave rank 0, the rank
that logs, 100% of the first source)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hrm_ray.config import build_config
from hrm_ray.data.ingest import TripletCollate
from hrm_ray.data.meta import read_meta, split_files
from hrm_ray.train.lm_task import LanguageModelTask
from hrm_ray.train.mixture_feed import Interleave, mixture_feed
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.task import WorkerContext
from tests.test_train_ray import make_prepared, on_three_nodes, records

WEIGHTS = [0.90, 0.04, 0.06]  # the curriculum's Stage B mix


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix_sources")
    return [str(make_prepared(root, name, rows, 8, offset=off))
            for name, rows, off in (("lang", 450, 0), ("math", 20, 500), ("code", 30, 600))]


def feeds(sources, world: int, micro: int = 8, accum: int = 1, samples: int = 500):
    return [mixture_feed(sources, WEIGHTS, samples, TripletCollate(0, 32), micro, accum, rank, world, seed=3,
                         shuffle_buffer=64) for rank in range(world)]


def source_ids(feed, steps: int, accum: int = 1) -> list[np.ndarray]:
    """Each step's source ids on this rank (its micro-batches together)."""
    return [np.concatenate([feed.next_batch()["source_id"].numpy() for _ in range(accum)]) for _ in range(steps)]


def assert_windows_hold_weights(steps: list[np.ndarray], window: int = 10, tolerance: float = 0.03) -> None:
    for start in range(0, len(steps) - window + 1):
        ids = np.concatenate(steps[start:start + window])
        share = np.bincount(ids, minlength=len(WEIGHTS)) / len(ids)
        assert np.abs(share - WEIGHTS).max() <= tolerance, (start, share)


def test_interleave_keeps_every_window_within_one_row_per_source():
    order = Interleave(WEIGHTS).take(5000)
    for length in (10, 37, 80, 500):
        for start in range(0, 5000 - length, 7):
            counts = np.bincount(order[start:start + length], minlength=3)
            assert np.abs(counts - np.multiply(WEIGHTS, length)).max() < 2, (start, length, counts)


@pytest.mark.parametrize("world", [1, 2])
def test_each_rank_holds_the_weights_over_every_ten_steps(sources, world):
    ranks = feeds(sources, world)
    per_rank = [source_ids(feed, 120) for feed in ranks]  # 120 steps: several epochs of the small sources
    for steps in per_rank:
        assert_windows_hold_weights(steps)
    batch = feeds(sources, world)[0].next_batch()
    whole = np.concatenate([s[0] for s in per_rank])
    assert batch["source_share"].tolist() == pytest.approx(np.bincount(whole, minlength=3) / len(whole))


def test_an_elastic_resize_continues_the_same_global_batches(sources):
    one = source_ids(feeds(sources, 1, accum=2)[0], 30, accum=2)  # one worker, 2 micro-batches of 8
    two = feeds(sources, 2)
    first = [source_ids(feed, 10) for feed in two]
    assert [np.concatenate(pair).tolist() for pair in zip(*first, strict=True)] == [s.tolist() for s in one[:10]]
    resumed = feeds(sources, 1, accum=2)[0]
    resumed.load_state_dict(two[0].state_dict())  # the group shrinks to one worker after step 10
    after = source_ids(resumed, 20, accum=2)
    assert [s.tolist() for s in after] == [s.tolist() for s in one[10:]]
    assert_windows_hold_weights([*first[0], *first[1]], tolerance=0.03)


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_two_workers_on_a_three_node_cluster_hold_the_mix_on_each_rank(sources, tmp_path, s3_bucket):
    """The docs' multi-node recipe (`--num_workers 2 --placement_strategy SPREAD`) on a real 3-node cluster:
    the logged `mix_<source>` (the global batch's) holds the weights in each window of 10 steps from the
    first, and meanwhile each rank's feed, as the worker builds it from the run's resolved task, holds them
    over every 10 steps. Before the run, on the same cluster, `data prepare --dest s3://...`: its actors on
    several nodes each write their units' shards into the bucket, and the dataset there is complete."""
    text = tmp_path / "docs.jsonl"
    text.write_text("".join(json.dumps({"text": f"document {i}: " + "the quick brown fox jumps over a lazy dog " * 2})
                            + "\n" for i in range(600)))  # ~60 KB: 30 work units of 2 KB
    tiny = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
            "--max_seq_len", "32"]
    spec = ",".join(f"{path}:{w}" for path, w in zip(sources, WEIGHTS, strict=True))
    flags = [*tiny, "--dataset", spec, "--num_workers", "2", "--cpus_per_worker", "1", "--placement_strategy",
             "SPREAD", "--batch_size", "8", "--steps", "20", "--log_steps", "10", "--val_every", "20",
             "--max_val_samples", "8", "--save_dir", str(tmp_path / "runs"), "--run_name", "mix2"]
    dest = f"{s3_bucket}/data/multi"
    with on_three_nodes(tmp_path, flags, options=("--prepare", str(text), dest)) as result:
        task = LanguageModelTask(resolve_config(build_config(None, flags)))  # what each worker builds
        for rank in range(2):
            assert_windows_hold_weights(source_ids(task.train_feed(WorkerContext(rank=rank, world_size=2)), 60))
        record = result()
    assert record["result"]["step"] == 20
    unit_nodes = set(record["prepare"]["unit_nodes"])
    assert len(unit_nodes) >= 2 and unit_nodes <= set(record["nodes"]), record["prepare"]
    assert f"on {len(unit_nodes)} nodes" in " ".join(record["prepare"]["notes"]), record["prepare"]
    meta = read_meta(dest)  # written last by the driver, after every actor's shards
    assert meta.train_samples > 0 and all(f.startswith(f"{dest}/train/") for f in split_files(dest, "train"))
    ranks = json.loads((tmp_path / "runs" / "mix2" / "workers.json").read_text())
    assert len({r["node_id"] for r in ranks}) == 2  # SPREAD: one worker per node
    logged = [r for r in records(tmp_path / "runs" / "mix2") if r["split"] == "train"]
    assert [r["step"] for r in logged] == [10, 20]
    for entry in logged:  # the global batch's shares over each window of 10 steps (the union gave 1/0/0)
        shares = [entry[f"mix_{name}"] for name in ("lang", "math", "code")]
        assert np.abs(np.subtract(shares, WEIGHTS)).max() <= 0.02, entry
