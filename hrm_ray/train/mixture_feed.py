"""A weighted mixture of prepared datasets as global batches that hold the weights in every window of steps.

Streaming the sources through one Ray Dataset (a union) and shuffling locally leaves them in blocks: whichever
source's blocks arrive first fill the first batches, and each rank sees its own share of blocks. Here every
rank reads every source straight from its files (its own seeded shuffle) and builds the same global batches:
position k of the interleave takes the source whose count lags its weight the most (`Interleave`), so any run
of positions is within a row or so per source of the weights, and each micro-batch slot of the global batch
(each rank's share) reads a run of positions step after step (`mixture_epochs`). The position is a global
sample index (`GlobalBatchFeed`): resume and elastic resizes continue at the same sample. A source that runs
out starts a new pass of its own.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch

from hrm_ray.data.meta import split_files
from hrm_ray.errors import UserError
from hrm_ray.train.data_feed import Batch, GlobalBatchFeed
from hrm_ray.train.parquet_feed import read_chunks, to_numpy


class Interleave:
    """Which source each position of a mixture epoch takes: the one whose count lags `props` the most
    (ties: the earlier source), so every prefix, and every window, stays within about one row per source."""

    def __init__(self, props: list[float]):
        self.props = np.asarray(props, dtype=np.float64)
        self.counts = np.zeros(len(props), dtype=np.float64)
        self.position = 0

    def take(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int32)
        for k in range(n):
            self.position += 1
            choice = int(np.argmax(self.position * self.props - self.counts))
            self.counts[choice] += 1
            out[k] = choice
        return out


class SourceRows:
    """One source's train rows, pass after pass: each pass reads its shards in a seeded order and shuffles
    windows of `shuffle_buffer` rows (as `parquet_epochs` does, but no row is dropped); handed out `n` at a
    time."""

    def __init__(self, path: str, seed: int, epoch: int, shuffle_buffer: int):
        self.files = split_files(path, "train")
        self.path, self.shuffle_buffer = path, max(1, shuffle_buffer)
        self.rng = np.random.default_rng([seed, epoch])
        self.pending: pa.Table | None = None
        self._chunks, self.pass_rows = self._new_pass(), 0

    def _new_pass(self) -> Iterator[pa.Table]:
        order = [self.files[i] for i in self.rng.permutation(len(self.files))]
        for file in order:
            for chunk in read_chunks(file, self.shuffle_buffer):
                yield chunk.take(pa.array(self.rng.permutation(chunk.num_rows)))

    def take(self, n: int) -> pa.Table:
        parts = [] if self.pending is None else [self.pending]
        have = sum(p.num_rows for p in parts)
        while have < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                if not self.pass_rows:
                    raise UserError(f"{self.path}: its train split has no rows")
                self._chunks, self.pass_rows = self._new_pass(), 0
                continue
            parts.append(chunk)
            have += chunk.num_rows
            self.pass_rows += chunk.num_rows
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        self.pending = table.slice(n)
        return table.slice(0, n)


def mixture_epochs(paths: list[str], props: list[float], epoch_samples: int, micro: int, global_batch: int,
                   seed: int, shuffle_buffer: int) -> Callable[[int], Iterator[pa.Table]]:
    """Epoch factory of a mixture: `epoch_samples // global_batch` (at least 1) global batches, each a table of
    the triplet columns and `source_id` (the source's index), the same in every process that asks.

    The interleaved sources come in blocks of `micro` positions; global batch s is blocks s .. s+K-1 (K micro-
    batches), so micro-batch slot k (a rank's share, or one of its accumulation steps) reads blocks k, k+1,
    ... step after step: contiguous stretches of the interleave on every rank, and each global batch one too.
    """
    slots = max(1, global_batch // micro)
    batches = max(1, epoch_samples // global_batch)

    def make_epoch(epoch: int) -> Iterator[pa.Table]:
        schedule = Interleave(props)
        sources = [SourceRows(path, seed * 1009 + i * 97, epoch, shuffle_buffer) if p > 0 else None
                   for i, (path, p) in enumerate(zip(paths, props, strict=True))]
        blocks = [schedule.take(micro) for _ in range(slots)]
        for _ in range(batches):
            yield assemble(np.concatenate(blocks), sources)
            blocks = [*blocks[1:], schedule.take(micro)]
    return make_epoch


def assemble(order: np.ndarray, sources: list[SourceRows | None]) -> pa.Table:
    """The rows `order` asks for (position k from source order[k]), in that order, with `source_id`."""
    parts, positions = [], []
    for i, rows in enumerate(sources):
        where = np.flatnonzero(order == i)
        if len(where) and rows is not None:
            parts.append(rows.take(len(where)).select(["encoder_ids", "decoder_input_ids", "labels"]))
            positions.append(where)
    table = pa.concat_tables([p.cast(parts[0].schema) for p in parts])
    table = table.take(pa.array(np.argsort(np.concatenate(positions), kind="stable")))
    return table.append_column("source_id", pa.array(order, pa.int32()))


def mixture_rows(collate: Callable[[dict], Batch], sources: int) -> Callable[[pa.Table, int, int], Batch]:
    """`GlobalBatchFeed`'s take: rows [start, stop) collated, with `source_share`, the whole global batch's
    share of each source (what the logged `mix_<source>` reports)."""
    def take(table: pa.Table, start: int, stop: int) -> Batch:
        batch = collate(to_numpy(table.slice(start, stop - start)))
        ids = table.column("source_id").to_numpy()
        batch["source_share"] = torch.from_numpy(np.bincount(ids, minlength=sources).astype(np.float32) / len(ids))
        return batch
    return take


def mixture_feed(paths: list[str], props: list[float], epoch_samples: int, collate: Callable[[dict], Batch],
                 micro: int, accum: int, rank: int, world_size: int, seed: int,
                 shuffle_buffer: int) -> GlobalBatchFeed:
    """This rank's feed of a mixture: its contiguous share of each global batch of `micro x accum x world`."""
    global_batch = micro * accum * world_size
    epochs = mixture_epochs(paths, props, epoch_samples, micro, global_batch, seed, shuffle_buffer)
    return GlobalBatchFeed(epochs, mixture_rows(collate, len(paths)), micro, accum, rank, world_size)
