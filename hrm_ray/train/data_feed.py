"""Batches for the loop, with a data position that a checkpoint stores so resume never replays batches.

Two sources: an in-process dataset addressed by index (`IndexedFeed`: a seeded permutation per epoch,
strided by rank, so a resumed run continues with exactly the batch it would have seen next), and an
iterator per epoch such as a Ray Dataset shard or a prepared split's files read in-process
(hrm_ray.train.parquet_feed) (`EpochFeed`: resume skips the batches the epoch already delivered).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import torch

from hrm_ray.errors import UserError

Batch = dict[str, torch.Tensor]


class BatchFeed(Protocol):
    def next_batch(self) -> Batch: ...
    def state_dict(self) -> dict[str, int]: ...
    def load_state_dict(self, state: dict[str, int]) -> None: ...
    def close(self) -> None: ...


class IndexedFeed:
    def __init__(self, size: int, collate: Callable[[list[int]], Batch], batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.size, self.collate, self.batch_size = size, collate, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.batches_per_epoch = (size // world_size) // batch_size
        if self.batches_per_epoch == 0:
            raise UserError(f"dataset of {size} samples is too small for batch_size {batch_size} "
                            f"x {world_size} workers")
        self.epoch, self.batch = 0, 0
        self._order: list[int] | None = None

    def _epoch_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        return order[self.rank::self.world_size].tolist()

    def next_batch(self) -> Batch:
        if self.batch >= self.batches_per_epoch:
            self.epoch, self.batch, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self._epoch_order()
        start = self.batch * self.batch_size
        self.batch += 1
        return self.collate(self._order[start:start + self.batch_size])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self._order = state["epoch"], state["batch"], None

    def close(self) -> None:
        """Nothing to release: the batches are built in-process."""


class EpochFeed:
    """`make_epoch(epoch)` returns that epoch's batches (e.g. a Ray shard's `iter_torch_batches`)."""

    def __init__(self, make_epoch: Callable[[int], Iterable[Batch]]):
        self.make_epoch = make_epoch
        self.epoch, self.batch = 0, 0
        self._iter: Iterator[Batch] | None = None

    def _start(self, skip: int) -> None:
        self._iter = iter(self.make_epoch(self.epoch))
        for _ in range(skip):
            if next(self._iter, None) is None:
                break

    def next_batch(self) -> Batch:
        if self._iter is None:
            self._start(self.batch)
        batch = next(self._iter, None)
        if batch is None:
            if self.batch == 0:
                raise UserError("the training data yielded no batch (dataset smaller than one batch?)")
            self.epoch, self.batch = self.epoch + 1, 0
            self._start(0)
            batch = next(self._iter, None)
            if batch is None:
                raise UserError("the training data yielded no batch in a new epoch")
        self.batch += 1
        return batch

    def close(self) -> None:
        """End the current epoch's iterator now: a Ray Data iterator left to the garbage collector
        may clean up after Ray has shut down, and that ends the process with exit code 1."""
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()
        self._iter = None

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self._iter = state["epoch"], state["batch"], None


def indexed_batches(size: int, collate: Callable[[list[int]], Batch], batch_size: int,
                    rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
    """Every sample of this rank's stride once, in order (evaluation)."""
    indices = list(range(rank, size, world_size))
    for start in range(0, len(indices), batch_size):
        yield collate(indices[start:start + batch_size])


def ray_shard_epochs(shard: Any, batch_size: int, collate_fn: Callable, seed: int,
                     shuffle_buffer: int = 0, prefetch_batches: int = 1) -> Callable[[int], Iterable[Batch]]:
    """Epoch factory over a Ray Dataset shard (a `DataIterator` or `Dataset`)."""
    def make_epoch(epoch: int) -> Iterable[Batch]:
        kwargs: dict[str, Any] = {"batch_size": batch_size, "collate_fn": collate_fn, "drop_last": True,
                                  "prefetch_batches": prefetch_batches}
        if shuffle_buffer:
            kwargs.update(local_shuffle_buffer_size=shuffle_buffer, local_shuffle_seed=seed * 100_003 + epoch)
        return shard.iter_torch_batches(**kwargs)
    return make_epoch
