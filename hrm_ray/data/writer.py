"""Write triplet tables as a prepared dataset: Parquet shards per split (and/or the seed's
JSONL files), inside a temporary directory that is renamed into place only when complete (or, for an
s3:// / gs:// destination, uploaded when complete, meta.json last).

Shard and row-group boundaries depend only on the row sequence, never on how Ray cut the
blocks, so the same rows give byte-identical files. Work-unit writers (`part=k`) never create
the dataset's root directory, nor any missing parent: once a failed job has removed its temporary
directory, a worker still writing fails instead of bringing it back.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hrm_ray.atomic import staged_dir
from hrm_ray.data.meta import SPLITS, TRIPLET_COLUMNS
from hrm_ray.errors import UserError
from hrm_ray.storage import (
    delete_dir,
    exists,
    filesystem,
    is_dir,
    is_file,
    is_remote,
    join,
    list_names,
    read_bytes,
    remove_tree,
    upload,
)

TOKENS = pa.list_(pa.int32())
TRIPLET_SCHEMA = pa.schema([(c, TOKENS) for c in TRIPLET_COLUMNS])
MIX_SCHEMA = TRIPLET_SCHEMA.append(pa.field("source", pa.string()))
FORMATS = ("parquet", "jsonl", "both")
PARTS_DIR = ".parts"


def check_dest(dest: str | Path, overwrite: bool, flag: str = "") -> str | Path:
    """`dest` as an output directory: refused when it or a parent is a file, or when it is not
    empty (unless `overwrite`). `flag` names the option in messages. A URI: `check_remote_dest`."""
    if is_remote(str(dest)):
        return check_remote_dest(str(dest), overwrite, flag)
    dest = Path(dest)
    name = f"{flag} {dest}" if flag else str(dest)
    blocker = next((p for p in (dest, *dest.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        what = "is" if blocker == dest else f"is inside {blocker}, which is"
        raise UserError(f"{name} {what} an existing file, not a directory (choose another path)")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise UserError(f"{name} already exists and is not empty (pass --overwrite to replace it)")
    return dest


def check_remote_dest(uri: str, overwrite: bool, flag: str = "") -> str:
    """A URI as an output directory: refused when its bucket is missing, when it is a file, or when it is not
    empty (unless `overwrite`)."""
    name = f"{flag} {uri}" if flag else uri
    scheme, _, rest = uri.partition("://")
    bucket = f"{scheme}://{rest.split('/', 1)[0]}"
    if not is_dir(bucket):
        raise UserError(f"{name}: bucket {bucket} not found (create it first)")
    if is_file(uri):
        raise UserError(f"{name} is an existing file, not a directory (choose another path)")
    names = list_names(uri)
    if names and not overwrite:
        hint = "" if "meta.json" in names else " (no meta.json: an interrupted upload?)"
        raise UserError(f"{name} already exists and is not empty{hint} (pass --overwrite to replace it)")
    return uri


@contextmanager
def atomic_dir(dest: str | Path, overwrite: bool = False, flag: str = "") -> Iterator[Path]:
    """`staged_dir` for a job's output: refuses an existing `dest` unless `overwrite`. A URI `dest` is
    staged on the local disk (`$TMPDIR`), then uploaded (`uploaded_dir`)."""
    if is_remote(str(dest)):
        with uploaded_dir(str(dest), overwrite, flag) as tmp:
            yield tmp
        return
    with staged_dir(check_dest(dest, overwrite, flag)) as tmp:
        yield tmp


@contextmanager
def uploaded_dir(uri: str, overwrite: bool, flag: str = "") -> Iterator[Path]:
    """A local staging directory whose complete contents replace `uri` on success, meta.json uploaded
    last (readers require it, so an interrupted upload never looks complete); the local copy is removed
    either way."""
    check_remote_dest(uri, overwrite, flag)
    local = Path(tempfile.mkdtemp(prefix="hrm-ray-upload-")) / uri.rstrip("/").rsplit("/", 1)[-1]
    try:
        with staged_dir(local) as tmp:
            yield tmp
        check_remote_dest(uri, overwrite, flag)  # nothing else wrote there meanwhile
        if overwrite and exists(uri):
            delete_dir(uri)
        try:
            upload(local, uri, last="meta.json")
        except OSError as exc:
            raise UserError(f"{flag} {uri}: upload failed ({exc}); what arrived has no meta.json".strip()) from None
    finally:
        shutil.rmtree(local.parent, ignore_errors=True)


@contextmanager
def remote_dataset(uri: str, overwrite: bool, flag: str = "") -> Iterator[str]:
    """The prefix `uri` as the staging area of a dataset that workers on any node write into directly (an
    object store has no rename): readers require meta.json, which the caller writes last, so until then the
    prefix is an incomplete dataset. With `overwrite` an existing dataset there is removed first. On any
    failure (Ctrl-C included) what was written is removed, best effort; never a meta.json."""
    check_remote_dest(uri, overwrite, flag)
    if overwrite and exists(uri):
        remove_tree(join(uri, "meta.json"))  # incomplete at once, even if the rest cannot be removed
        delete_dir(uri)
    try:
        yield uri
    except BaseException:
        if not remove_tree(uri):
            print(f"{flag} {uri}: could not remove what the failed job wrote there (it has no meta.json)".strip(),
                  flush=True)
        raise


def upload_part(local_root: Path, uri: str) -> None:
    """A work unit's files (written under `local_root` by a `DatasetWriter(part=k)`) into the dataset at `uri`."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    for file in sorted(p for p in local_root.rglob("*") if p.is_file()):
        pafs.copy_files(str(file), f"{path}/{file.relative_to(local_root).as_posix()}", destination_filesystem=fs)


def finish_remote_parts(uri: str, fmt: str, parquet_files: dict[str, list[str]], parts: int,
                        schema: pa.Schema = TRIPLET_SCHEMA) -> dict[str, list[str]]:
    """`finish_parts` for a dataset in a store: empty shards written, JSONL parts streamed into one object per
    split in unit order, the parts removed."""
    fs, path = filesystem(uri)
    files: dict[str, list[str]] = {}
    for split in SPLITS:
        files[split] = list(parquet_files.get(split, []))
        if fmt in ("parquet", "both") and not files[split]:
            pq.write_table(schema.empty_table(), f"{path}/{split}/part-00000.parquet", filesystem=fs,
                           compression="zstd")
            files[split].append("part-00000.parquet")
        if fmt in ("jsonl", "both"):
            with fs.open_output_stream(f"{path}/{split}.jsonl") as out:
                for k in range(parts):
                    part = join(uri, PARTS_DIR, f"{split}-{k:05d}.jsonl")
                    if exists(part):
                        out.write(read_bytes(part))
            files[split].append(f"{split}.jsonl")
    remove_tree(join(uri, PARTS_DIR))
    return files


class ParquetShards:
    """Parquet shards `part-00000.parquet`, ... of exactly `rows_per_shard` rows (the last one
    shorter), row groups of exactly `row_group_rows`."""

    def __init__(self, directory: Path, schema: pa.Schema, rows_per_shard: int, row_group_rows: int,
                 name_prefix: str = "part-", write_empty: bool = True):
        if rows_per_shard < 1:
            raise UserError(f"--rows-per-shard must be >= 1, got {rows_per_shard}")
        self.directory, self.schema = directory, schema
        self.name_prefix, self.write_empty = name_prefix, write_empty
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
        if not self.files and self.write_empty:
            self.files.append(write_empty_shard(self.directory, self.schema))
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
            self.directory.mkdir(exist_ok=True)
            name = f"{self.name_prefix}{len(self.files):05d}.parquet"
            self.files.append(name)
            self.writer = pq.ParquetWriter(self.directory / name, self.schema, compression="zstd")
        self.writer.write_table(group, row_group_size=n)
        self.rows_in_shard += n
        self.rows += n
        if self.rows_in_shard == self.rows_per_shard:
            self.writer.close()
            self.writer, self.rows_in_shard = None, 0


def write_empty_shard(directory: Path, schema: pa.Schema) -> str:
    """An empty split still gets a (0-row) shard: the layout stays complete."""
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(schema.empty_table(), directory / "part-00000.parquet", compression="zstd")
    return "part-00000.parquet"


class JsonlFile:
    """The seed's layout: one JSON object a line with the triplet arrays."""

    def __init__(self, path: Path, columns: list[str], listed: bool = True):
        self.path, self.columns = path, columns
        path.parent.mkdir(exist_ok=True)
        self.handle = open(path, "w", encoding="utf-8")
        self.rows = 0
        self.files = [path.name] if listed else []

    def write(self, table: pa.Table) -> None:
        for row in table.select(self.columns).to_pylist():
            self.handle.write(json.dumps(row, separators=(",", ":")) + "\n")
        self.rows += table.num_rows

    def close(self) -> None:
        self.handle.close()


class DatasetWriter:
    """Route tables to per-split sinks; `counts()` gives the exact rows written per split.

    With `part=k` it writes one work unit's share of a dataset that several workers write at
    once: shards `part-0000k-NNNNN.parquet`, JSONL into `PARTS_DIR/{split}-0000k.jsonl`, and no
    empty shards; `finish_parts` completes the layout once every unit is written."""

    def __init__(self, root: Path, fmt: str = "parquet", schema: pa.Schema = TRIPLET_SCHEMA,
                 rows_per_shard: int = 100_000, row_group_rows: int = 10_000, part: int | None = None):
        if fmt not in FORMATS:
            raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if part is None:  # the only writer of `root`; unit writers (`part`) need it to exist
            root.mkdir(parents=True, exist_ok=True)
        self.sinks: dict[str, list] = {}
        for split in SPLITS:
            sinks: list = []
            if fmt in ("parquet", "both"):
                prefix = "part-" if part is None else f"part-{part:05d}-"
                sinks.append(ParquetShards(root / split, schema, rows_per_shard, row_group_rows,
                                           name_prefix=prefix, write_empty=part is None))
            if fmt in ("jsonl", "both"):
                path = root / f"{split}.jsonl" if part is None else root / PARTS_DIR / f"{split}-{part:05d}.jsonl"
                sinks.append(JsonlFile(path, schema.names, listed=part is None))
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


def finish_parts(root: Path, fmt: str, parquet_files: dict[str, list[str]], parts: int,
                 schema: pa.Schema = TRIPLET_SCHEMA) -> dict[str, list[str]]:
    """Complete a dataset written by `parts` work units: an empty shard for an empty split, the
    units' JSONL parts concatenated in unit order. Returns the files of each split."""
    files: dict[str, list[str]] = {}
    for split in SPLITS:
        files[split] = list(parquet_files.get(split, []))
        if fmt in ("parquet", "both") and not files[split]:
            files[split].append(write_empty_shard(root / split, schema))
        if fmt in ("jsonl", "both"):
            with open(root / f"{split}.jsonl", "wb") as out:
                for k in range(parts):
                    part = root / PARTS_DIR / f"{split}-{k:05d}.jsonl"
                    if part.exists():
                        with open(part, "rb") as handle:
                            shutil.copyfileobj(handle, out, 1 << 20)
            files[split].append(f"{split}.jsonl")
    shutil.rmtree(root / PARTS_DIR, ignore_errors=True)
    return files
