"""A prepared dataset's split read straight from its files with pyarrow: the data path of an in-process run
(`--num_workers 0`), where no Ray Data (and no Ray) runs, and of an elastic run's workers, whose data position
must be a global sample index.

Per training epoch the split's shards come in a seeded order and rows are shuffled within windows of
`shuffle_buffer` rows (what Ray Data's local shuffle buffer does on the worker path); only full batches are
yielded. An epoch is a pure function of (seed, epoch): every worker reads the same global batches and
takes its share, and a resume (with any number of workers) skips global batches (`GlobalBatchFeed`). Memory
holds one window, whatever the dataset's size. Both layouts of hrm_ray.data.meta load: Parquet shards and
the seed's train.jsonl/val.jsonl, from a local directory or a URI (s3://, gs://: hrm_ray.storage).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from hrm_ray.data.meta import TRIPLET_COLUMNS, split_files
from hrm_ray.errors import UserError
from hrm_ray.storage import filesystem, read_bytes
from hrm_ray.train.data_feed import Batch

Collate = Callable[[dict[str, Any]], Batch]


def split_rows(path: str | Path, split: str) -> int:
    """Rows of one split, from the Parquet footers (or the lines of a .jsonl) without reading the data."""
    total = 0
    for file in split_files(path, split):
        if file.endswith(".jsonl"):
            total += sum(1 for line in read_bytes(file).splitlines() if line.strip())
        else:
            total += open_parquet(file).metadata.num_rows
    return total


def open_parquet(file: str) -> pq.ParquetFile:
    """A shard, local or remote (through hrm_ray.storage's filesystem)."""
    fs, path = filesystem(file)
    try:
        return pq.ParquetFile(fs.open_input_file(path))
    except OSError as exc:
        raise UserError(f"{file}: cannot read it ({exc})") from None


def read_chunks(file: str, rows: int) -> Iterator[pa.Table]:
    """The triplet columns of one shard, `rows` rows at a time."""
    if file.endswith(".jsonl"):
        table = pajson.read_json(pa.BufferReader(read_bytes(file))).select(list(TRIPLET_COLUMNS))
        yield from (pa.Table.from_batches([b]) for b in table.to_batches(max_chunksize=rows))
        return
    for batch in open_parquet(file).iter_batches(batch_size=rows, columns=list(TRIPLET_COLUMNS)):
        yield pa.Table.from_batches([batch])


def to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """A table in Ray Data's numpy batch format (a list column: an object array of arrays), what the
    triplet collate functions take."""
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


def shuffled_batches(chunks: Iterator[pa.Table], batch_size: int, rng: np.random.Generator) -> Iterator[pa.Table]:
    """Full batches of the rows of `chunks`, each chunk shuffled with the rows the previous one left over;
    the last partial batch is dropped."""
    pending: pa.Table | None = None
    for chunk in chunks:
        table = chunk if pending is None else pa.concat_tables([pending, chunk])
        table = table.take(pa.array(rng.permutation(table.num_rows)))
        full = table.num_rows - table.num_rows % batch_size
        for start in range(0, full, batch_size):
            yield table.slice(start, batch_size)
        pending = table.slice(full)


def parquet_epochs(path: str | Path, split: str, batch_size: int, seed: int,
                   shuffle_buffer: int) -> Callable[[int], Iterator[pa.Table]]:
    """Epoch factory over one split of a prepared dataset: its global batches of `batch_size` rows as tables,
    the same in every process that asks (`GlobalBatchFeed` gives each rank its share)."""
    files = split_files(path, split)

    def make_epoch(epoch: int) -> Iterator[pa.Table]:
        rng = np.random.default_rng(seed * 100_003 + epoch)
        order = [files[i] for i in rng.permutation(len(files))]
        chunks = (chunk for file in order for chunk in read_chunks(file, max(shuffle_buffer, batch_size)))
        return shuffled_batches(chunks, batch_size, rng)
    return make_epoch


def table_rows(collate: Collate) -> Callable[[pa.Table, int, int], Batch]:
    """`GlobalBatchFeed`'s take over tables: rows [start, stop) collated."""
    return lambda table, start, stop: collate(to_numpy(table.slice(start, stop - start)))


def parquet_batches(path: str | Path, split: str, batch_size: int, collate: Collate, limit: int = 0) -> Iterator[Batch]:
    """The first `limit` rows of a split (0: all) in file order, once, in batches (the last may be short):
    validation."""
    left = limit or None
    for file in split_files(path, split):
        for chunk in read_chunks(file, batch_size):
            if left is not None:
                chunk = chunk.slice(0, left)
                left -= chunk.num_rows
            if chunk.num_rows:
                yield collate(to_numpy(chunk))
            if left == 0:
                return
