"""Write triplet tables as a prepared dataset: Parquet shards per split (and/or the seed's
JSONL files), inside a temporary directory that is renamed into place only when complete.

Shard and row-group boundaries depend only on the row sequence, never on how Ray cut the
blocks, so the same rows give byte-identical files.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hrm_ray.atomic import staged_dir
from hrm_ray.data.meta import SPLITS, TRIPLET_COLUMNS
from hrm_ray.errors import UserError

TOKENS = pa.list_(pa.int32())
TRIPLET_SCHEMA = pa.schema([(c, TOKENS) for c in TRIPLET_COLUMNS])
MIX_SCHEMA = TRIPLET_SCHEMA.append(pa.field("source", pa.string()))
FORMATS = ("parquet", "jsonl", "both")


def check_dest(dest: str | Path, overwrite: bool) -> Path:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise UserError(f"{dest} already exists and is not empty (pass --overwrite to replace it)")
    return dest


@contextmanager
def atomic_dir(dest: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """`staged_dir` for a job's output: refuses an existing `dest` unless `overwrite`."""
    with staged_dir(check_dest(dest, overwrite)) as tmp:
        yield tmp


class ParquetShards:
    """Parquet shards `part-00000.parquet`, ... of exactly `rows_per_shard` rows (the last one
    shorter), row groups of exactly `row_group_rows`."""

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_shard: int, row_group_rows: int):
        self.directory, self.schema = directory, schema
        self.rows_per_shard, self.row_group_rows = rows_per_shard, min(row_group_rows, rows_per_shard)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.rows_in_shard = 0
        self.files: list[str] = []
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self._next_group_rows():
            self._flush(self._next_group_rows())

    def close(self) -> None:
        while self.pending_rows:
            self._flush(min(self.pending_rows, self._next_group_rows()))
        if not self.files:  # an empty split still gets a (0-row) shard: the layout stays complete
            self.directory.mkdir(parents=True, exist_ok=True)
            self.files.append("part-00000.parquet")
            pq.write_table(self.schema.empty_table(), self.directory / self.files[0], compression="zstd")
        if self.writer:
            self.writer.close()
            self.writer = None

    def _next_group_rows(self) -> int:
        return min(self.row_group_rows, self.rows_per_shard - self.rows_in_shard)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self.pending)
        group, rest = table.slice(0, n).combine_chunks(), table.slice(n)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self.writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"part-{len(self.files):05d}.parquet"
            self.files.append(name)
            self.writer = pq.ParquetWriter(self.directory / name, self.schema, compression="zstd")
        self.writer.write_table(group, row_group_size=n)
        self.rows_in_shard += n
        self.rows += n
        if self.rows_in_shard == self.rows_per_shard:
            self.writer.close()
            self.writer, self.rows_in_shard = None, 0


class JsonlFile:
    """The seed's layout: one JSON object a line with the triplet arrays."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.handle = open(path, "w", encoding="utf-8")
        self.rows = 0
        self.files = [path.name]

    def write(self, table: pa.Table) -> None:
        for row in table.select(self.columns).to_pylist():
            self.handle.write(json.dumps(row, separators=(",", ":")) + "\n")
        self.rows += table.num_rows

    def close(self) -> None:
        self.handle.close()


class DatasetWriter:
    """Route tables to per-split sinks; `counts()` gives the exact rows written per split."""

    def __init__(self, root: Path, fmt: str = "parquet", schema: pa.Schema = TRIPLET_SCHEMA,
                 rows_per_shard: int = 100_000, row_group_rows: int = 10_000):
        if fmt not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.sinks: dict[str, list] = {}
        for split in SPLITS:
            sinks: list = []
            if fmt in ("parquet", "both"):
                sinks.append(ParquetShards(root / split, schema, rows_per_shard, row_group_rows))
            if fmt in ("jsonl", "both"):
                sinks.append(JsonlFile(root / f"{split}.jsonl", schema.names))
            self.sinks[split] = sinks
        self.schema = schema

    def write(self, split: str, table: pa.Table) -> None:
        if table.num_rows:
            table = table.select(self.schema.names).cast(self.schema)
            for sink in self.sinks[split]:
                sink.write(table)

    def close(self) -> None:
        for sinks in self.sinks.values():
            for sink in sinks:
                sink.close()

    def counts(self) -> dict[str, int]:
        return {split: sinks[0].rows for split, sinks in self.sinks.items()}

    def files(self) -> dict[str, list[str]]:
        return {split: [f for s in sinks for f in s.files] for split, sinks in self.sinks.items()}
