"""Read either layout split by split without Ray, and convert between our Parquet layout and
the seed's JSONL layout (`train.jsonl`/`val.jsonl`, one {"encoder_ids", "decoder_input_ids",
"labels"} object a line, with tokenizer.json and meta.json beside them)."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hrm_ray.data.meta import SPLITS, TRIPLET_COLUMNS, read_meta, split_files, write_meta
from hrm_ray.data.records import numbered_jsonl
from hrm_ray.data.writer import MIX_SCHEMA, TRIPLET_SCHEMA, DatasetWriter, atomic_dir
from hrm_ray.errors import UserError
from hrm_ray.storage import localize, open_input_file

BATCH_ROWS = 8192


def iter_split_tables(path: str | Path, split: str, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Table]:
    """Tables of at most `batch_rows` rows, in file order, from either layout."""
    for file in split_files(path, split):
        if file.endswith(".parquet"):
            handle = pq.ParquetFile(open_input_file(file))
            for batch in handle.iter_batches(batch_size=batch_rows):
                yield pa.Table.from_batches([batch])
            continue
        rows: list[dict] = []
        for lineno, row in numbered_jsonl(localize(file)):
            missing = [c for c in TRIPLET_COLUMNS if c not in row]
            if missing:
                raise UserError(f"{file}: line {lineno}: missing {', '.join(missing)}")
            rows.append(row)
            if len(rows) == batch_rows:
                yield _rows_to_table(rows)
                rows = []
        if rows:
            yield _rows_to_table(rows)


def _rows_to_table(rows: list[dict]) -> pa.Table:
    schema = MIX_SCHEMA if "source" in rows[0] else TRIPLET_SCHEMA
    return pa.Table.from_pylist(rows, schema=schema)


def split_row_count(path: str | Path, split: str) -> int:
    """Rows actually stored (Parquet footers, or JSONL lines)."""
    total = 0
    for file in split_files(path, split):
        if file.endswith(".parquet"):
            total += pq.ParquetFile(open_input_file(file)).metadata.num_rows
        else:
            with open(localize(file), encoding="utf-8") as handle:
                total += sum(1 for line in handle if line.strip())
    return total


def convert_layout(src: str | Path, dest: str | Path, fmt: str, overwrite: bool = False) -> dict[str, int]:
    """Rewrite a prepared dataset in another layout (fmt: parquet | jsonl | both)."""
    meta = read_meta(src)
    with atomic_dir(dest, overwrite) as tmp:
        writer = DatasetWriter(tmp, fmt)
        for split in SPLITS:
            for table in iter_split_tables(src, split):
                writer.write(split, table)
        writer.close()
        counts = writer.counts()
        shutil.copyfile(Path(src) / "tokenizer.json", tmp / "tokenizer.json")
        write_meta(tmp, {**meta.raw, "train_samples": counts["train"], "val_samples": counts["val"],
                         "format": fmt, "shards": writer.files()})
    return counts
