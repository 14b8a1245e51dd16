"""merge_prepared_batches (chunk mode): stream the splits of several prepared chunks into one
dataset, write an aggregated meta.json, and delete the chunks only after the merged output is
complete, renamed into place and its row counts verified against the chunks' meta.

A merge is sequential I/O with nothing to compute, so it streams with pyarrow in the driver.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrm_ray.data.jsonl_io import iter_split_tables, split_row_count
from hrm_ray.data.meta import SPLITS, check_same_tokenizer, read_meta, write_meta
from hrm_ray.data.writer import MIX_SCHEMA, TRIPLET_SCHEMA, DatasetWriter, atomic_dir, check_dest
from hrm_ray.errors import UserError
from hrm_ray.storage import delete_dir, is_dir, is_file, is_remote, join, list_names, read_bytes


@dataclass
class MergeReport:
    output: str
    chunks: list[str]
    samples: dict[str, int]
    deleted: bool

    def summary(self) -> str:
        action = "deleted" if self.deleted else "kept"
        return (f"merged {len(self.chunks)} chunks into {self.output}: train {self.samples['train']}, "
                f"val {self.samples['val']} samples (counts verified); chunks {action}")


def _sum_counts(values: list[Any]) -> Any:
    """Add up nested count dicts of the chunks' meta.json."""
    if all(isinstance(v, dict) for v in values):
        keys = sorted({k for v in values for k in v})
        return {k: _sum_counts([v[k] for v in values if k in v]) for k in keys}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return sum(values)
    return values[0]


def find_chunks(batches: str | Path) -> list[str]:
    """The complete chunks under `batches` (a directory or a store's prefix): those with a meta.json."""
    root = str(batches).rstrip("/") if is_remote(str(batches)) else str(batches)
    if not is_dir(root):
        raise UserError(f"--batches not found: {root}")
    chunks = [join(root, name) for name in list_names(root)]
    chunks = [c for c in chunks if is_dir(c) and is_file(join(c, "meta.json"))]
    if not chunks:
        raise UserError(f"--batches {root}: no prepared chunks (subdirectories with meta.json)")
    return chunks


def _name(chunk: str) -> str:
    return chunk.rstrip("/").rsplit("/", 1)[-1]


def merge_prepared_batches(batches: str, output_dir: str, keep_chunks: bool = False,
                           fmt: str | None = None, overwrite: bool = False) -> MergeReport:
    chunks = find_chunks(batches)
    check_dest(output_dir, overwrite)
    metas = [read_meta(c) for c in chunks]
    check_same_tokenizer(metas)
    fmt = fmt or ("jsonl" if all(m.layout == "jsonl" for m in metas) else "parquet")
    expected = {s: sum(split_row_count(c, s) if m.samples(s) is None else m.samples(s)
                       for c, m in zip(chunks, metas, strict=True)) for s in SPLITS}
    has_source = all(
        "source" in t.column_names for c in chunks for t in _first_table(c))
    with atomic_dir(output_dir, overwrite) as tmp:
        writer = DatasetWriter(tmp, fmt, schema=MIX_SCHEMA if has_source else TRIPLET_SCHEMA)
        for split in SPLITS:
            for chunk in chunks:
                for table in iter_split_tables(chunk, split):
                    writer.write(split, table)
        writer.close()
        written = writer.counts()
        stored = {s: split_row_count(tmp, s) for s in SPLITS}
        if written != expected or stored != expected:
            raise UserError(f"merge count mismatch: chunks' meta say {expected}, wrote {written}, "
                            f"stored {stored}; chunks left untouched")
        (tmp / "tokenizer.json").write_bytes(read_bytes(join(chunks[0], "tokenizer.json")))
        base = dict(metas[0].raw)
        write_meta(tmp, {**base, "train_samples": written["train"], "val_samples": written["val"],
                         "counts": _sum_counts([m.raw.get("counts", {}) for m in metas]),
                         "format": fmt, "shards": writer.files(),
                         "max_seq_len": max((m.max_seq_len or 0) for m in metas) or None,
                         "merged_from": [_name(c) for c in chunks], "created_by": "hrm-ray data merge"})
    if not keep_chunks:
        for chunk in chunks:
            if is_remote(chunk):
                delete_dir(chunk)
            else:
                shutil.rmtree(chunk)
    return MergeReport(str(output_dir), [_name(c) for c in chunks], written, not keep_chunks)


def _first_table(chunk: str):
    for split in SPLITS:
        for table in iter_split_tables(chunk, split, batch_rows=1):
            yield table
            return
