"""Batches for the loop, with a data position that a checkpoint stores so resume never replays batches.

Two kinds: global batches addressed by a global sample index (`GlobalBatchFeed`; `IndexedFeed` over an
in-process dataset, `hrm_ray.train.parquet_feed.parquet_epochs` over a prepared split's files), each rank
taking its share, so a resumed run continues with exactly the samples it would have seen next, with any
number of workers; and a Ray Dataset shard per rank (`EpochFeed`: resume skips the batches this rank's shard
already delivered).
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


class GlobalBatchFeed:
    """Batches addressed by a global sample index, the same whatever the number of workers.

    An epoch is a sequence of global batches (`make_epoch(epoch)`: index lists, tables, anything `take`
    slices) of `micro x accum x world` samples; rank r takes its contiguous share of each and hands it out as
    `accum` micro-batches of `micro`. The position is (epoch, samples of the epoch all ranks consumed): a run
    resumed with another number of workers (an elastic resize) continues at the same sample, neither
    repeating nor skipping one, and each optimizer step sees the same samples in the same micro-batches.
    """

    def __init__(self, make_epoch: Callable[[int], Iterable[Any]], take: Callable[[Any, int, int], Batch],
                 micro: int, accum: int = 1, rank: int = 0, world_size: int = 1):
        self.make_epoch, self.take = make_epoch, take
        self.micro, self.accum, self.rank, self.world_size = micro, accum, rank, world_size
        self.global_batch = micro * accum * world_size
        self.epoch, self.sample = 0, 0
        self._iter: Iterator[Any] | None = None
        self._share: list[Any] = []

    def _next_global(self) -> Any:
        if self._iter is None:
            self._iter = iter(self.make_epoch(self.epoch))
            for _ in range(self.sample // self.global_batch):
                next(self._iter, None)
        batch = next(self._iter, None)
        if batch is None:
            if self.sample == 0:
                raise UserError(f"the training data yielded no global batch of {self.global_batch} samples "
                                f"({self.micro} x {self.accum} micro-batches x {self.world_size} workers)")
            self.epoch, self.sample, self._iter = self.epoch + 1, 0, None
            return self._next_global()
        self.sample += self.global_batch
        return batch

    def next_batch(self) -> Batch:
        if not self._share:
            whole = self._next_global()
            first = self.rank * self.micro * self.accum
            self._share = [(whole, first + k * self.micro) for k in range(self.accum)]
        whole, start = self._share.pop(0)
        return self.take(whole, start, start + self.micro)

    def state_dict(self) -> dict[str, int]:
        """Read between optimizer steps (a checkpoint), when this rank has used its whole share."""
        return {"epoch": self.epoch, "sample": self.sample}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sample = state.get("sample", state.get("batch", 0) * self.global_batch)  # older checkpoints: batches
        self.epoch, self.sample, self._iter, self._share = state["epoch"], sample, None, []

    def close(self) -> None:
        close = getattr(self._iter, "close", None)
        if close is not None:
            close()
        self._iter = None


class IndexedFeed(GlobalBatchFeed):
    """An in-process dataset of `size` samples addressed by index: a seeded permutation per epoch, cut into
    global batches."""

    def __init__(self, size: int, collate: Callable[[list[int]], Batch], batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, accum: int = 1):
        global_batch = batch_size * accum * world_size
        if size < global_batch:
            raise UserError(f"dataset of {size} samples is too small for a global batch of {global_batch} "
                            f"(batch_size {batch_size} x {accum} micro-batches x {world_size} workers)")

        def make_epoch(epoch: int) -> Iterator[list[int]]:
            generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
            order = torch.randperm(size, generator=generator).tolist()
            return (order[i:i + global_batch] for i in range(0, size - global_batch + 1, global_batch))

        super().__init__(make_epoch, lambda whole, a, b: collate(whole[a:b]), batch_size, accum, rank, world_size)


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
