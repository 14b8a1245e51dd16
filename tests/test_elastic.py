"""Elastic runs without a cluster: `--num_workers MIN-MAX`, the global batch split over any worker count, data
positions as a global sample index, and the checks that refuse what cannot resize. The run on a real
cluster that loses a node is tests/test_train_ray.py."""
from __future__ import annotations

import pytest
import torch

from hrm_ray.config import build_config
from hrm_ray.errors import UserError
from hrm_ray.storage import ray_storage
from hrm_ray.train.data_feed import IndexedFeed
from hrm_ray.train.global_batch import micro_batches
from hrm_ray.train.resolve import check_worker_range
from hrm_ray.train.resources import run_need
from hrm_ray.train.run_plan import worker_group
from hrm_ray.train.task_registry import task_class
from tests.test_train_ray import make_prepared


def test_a_worker_range_sets_min_and_max_and_bad_ones_are_one_line():
    cfg = build_config(None, ["--num_workers", "1-4", "--batch_size", "8"])
    assert (cfg.ray.min_workers, cfg.ray.num_workers) == (1, 4)
    assert worker_group(cfg.ray).ray_group_size() == (1, 4) and run_need(cfg.ray, False).workers == 1  # the fewest
    assert worker_group(build_config(None, ["--num_workers", "2"]).ray).ray_group_size() == 2
    for bad in ("3-1", "0-2", "a-2"):
        with pytest.raises(UserError, match="ray.num_workers") as err:
            build_config(None, ["--num_workers", bad])
        assert "\n" not in str(err.value)


def test_the_global_batch_is_split_over_any_worker_count():
    cfg = build_config(None, ["--num_workers", "1-4", "--batch_size", "8"])
    assert [micro_batches(cfg, w) for w in (1, 2, 4)] == [4, 2, 1]  # 4 micro-batches of 8 per step, always
    with pytest.raises(UserError, match="does not split evenly over 3 workers"):
        check_worker_range(cfg)
    check_worker_range(build_config(None, ["--num_workers", "1-3", "--grad_accum_steps", "2"]))  # 6 = 6, 3x2, 2x3
    puzzle = build_config(None, ["--arch", "hrm_v1", "--num_workers", "1-3", "--global_batch_size", "8"])
    assert task_class(puzzle).micro_batches(puzzle, 2) == 1  # a puzzle rank runs its share as one batch (one ACT carry slot each)
    with pytest.raises(UserError, match="global batch of 8 examples does not split evenly over 3 workers"):
        check_worker_range(puzzle)


def test_ranks_share_the_same_global_batches_whatever_their_number_and_resume_across_sizes():
    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor(indices)}

    def steps(world: int, accum: int, count: int, start: dict | None = None) -> list[list[int]]:
        """The samples of each optimizer step, all ranks and micro-batches together in order."""
        feeds = [IndexedFeed(100, collate, 4, seed=7, rank=r, world_size=world, accum=accum) for r in range(world)]
        for feed in feeds:
            if start is not None:
                feed.load_state_dict(start)
        out = [[i for feed in feeds for _ in range(accum) for i in feed.next_batch()["x"].tolist()]
               for _ in range(count)]
        assert len({str(f.state_dict()) for f in feeds}) == 1  # one position, whatever the rank
        return out, feeds[0].state_dict()

    one, _ = steps(1, 2, 30)
    two, after_two = steps(2, 1, 5)
    assert two == one[:5]                                       # 2 ranks x 8 = 1 rank x 2 micro-batches of 8
    resumed, _ = steps(1, 2, 25, start=after_two)               # a resize from 2 workers to 1 after step 5
    assert resumed == one[5:30]                                 # no sample repeated or skipped, epochs included
    assert after_two == {"epoch": 0, "sample": 40}


def test_elastic_runs_read_datasets_by_sample_index_a_mixture_included(tmp_path):
    from hrm_ray.train.lm_task import LanguageModelTask
    from hrm_ray.train.resolve import resolve_config

    a, b = make_prepared(tmp_path, "a", 64, 8), make_prepared(tmp_path, "b", 64, 8, offset=64)
    elastic = resolve_config(build_config(None, ["--num_workers", "1-2", "--dataset", str(a)]))
    assert not LanguageModelTask(elastic).needs_ray_data()       # every rank reads the files, by global index
    assert LanguageModelTask(resolve_config(build_config(None, ["--num_workers", "2", "--dataset", str(a)]))
                             ).needs_ray_data()                  # a fixed group streams its shards
    mixed = resolve_config(build_config(None, ["--num_workers", "1-2", "--dataset", f"{a}:0.5,{b}:0.5"]))
    assert LanguageModelTask(mixed).data.kind == "mixture"  # accepted: it trains from the files by sample index
    # (hrm_ray.train.mixture_feed; tests/test_mixture_feed.py resizes one from 2 workers to 1)


def test_ray_writes_to_an_s3_compatible_store_through_its_filesystem(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    args = ray_storage("s3://bucket/runs")
    assert args["storage_path"] == "bucket/runs" and type(args["storage_filesystem"]).__name__ == "S3FileSystem"
    assert ray_storage("/data/runs") == {"storage_path": "/data/runs"}
