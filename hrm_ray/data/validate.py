"""validate: check a prepared dataset end to end and name every problem by shard and row.

Checks: meta.json and tokenizer.json present and consistent (sha256, vocab size), schema
(list<int32> triplet columns), token ids in [0, vocab_size), lengths <= max_seq_len, non-empty
encoder, decoder_input_ids = BOS + target and labels = target + EOS (aligned, same length),
per-split row counts equal to meta.json, every shard meta.json lists present, and a train split that is
not empty.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hrm_ray.data.jsonl_io import iter_split_tables
from hrm_ray.data.meta import SPLITS, TRIPLET_COLUMNS, DatasetMeta, read_meta, split_files
from hrm_ray.data.tokenizer import file_sha256, load_tokenizer
from hrm_ray.data.writer import TOKENS
from hrm_ray.errors import UserError
from hrm_ray.storage import is_remote, localize

MAX_LISTED = 50


@dataclass
class ValidationReport:
    path: str
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, message: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_LISTED:
            self.problems.append(message)

    def summary(self) -> str:
        rows = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        if self.ok:
            return f"OK {self.path}: {rows} rows; schema, ids, lengths, alignment and counts check out"
        more = self.problem_count - len(self.problems)
        lines = [f"INVALID {self.path}: {self.problem_count} problem(s) ({rows} rows)"]
        lines += [f"  {p}" for p in self.problems]
        if more:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)


def _offsets(arr: pa.ListArray) -> np.ndarray:
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    return offsets - offsets[0]


def check_table(table: pa.Table | pa.RecordBatch, meta: DatasetMeta, where: str, first_row: int,
                report: ValidationReport) -> None:
    cols = {c: table.column(c) for c in TRIPLET_COLUMNS}
    cols = {c: (a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a) for c, a in cols.items()}
    lengths = {c: np.diff(_offsets(a)) for c, a in cols.items()}
    values = {c: a.flatten().to_numpy(zero_copy_only=False).astype(np.int64) for c, a in cols.items()}
    max_len = meta.max_seq_len

    def bad(rows: np.ndarray, what: str) -> None:
        for r in rows[: MAX_LISTED]:
            report.add(f"{where} row {first_row + int(r)}: {what}")
        for _ in rows[MAX_LISTED:]:
            report.problem_count += 1

    for c in TRIPLET_COLUMNS:
        parents = np.repeat(np.arange(len(lengths[c])), lengths[c])
        out_of_range = (values[c] < 0) | (values[c] >= meta.vocab_size)
        bad(np.unique(parents[out_of_range]), f"{c} has token ids outside [0, {meta.vocab_size})")
        if max_len:
            bad(np.flatnonzero(lengths[c] > max_len), f"{c} longer than max_seq_len {max_len}")
    bad(np.flatnonzero(lengths["encoder_ids"] == 0), "encoder_ids is empty")
    bad(np.flatnonzero(lengths["decoder_input_ids"] == 0), "decoder_input_ids is empty")
    mismatch = lengths["decoder_input_ids"] != lengths["labels"]
    bad(np.flatnonzero(mismatch), "labels and decoder_input_ids differ in length")
    if mismatch.any():
        return
    dec, lab, n = values["decoder_input_ids"], values["labels"], lengths["labels"]
    starts = _offsets(cols["labels"])[:-1]
    nonempty = n > 0
    bad(np.flatnonzero(nonempty & (dec[np.minimum(starts, len(dec) - 1)] != meta.bos_id)),
        f"decoder_input_ids does not start with BOS ({meta.bos_id})")
    bad(np.flatnonzero(nonempty & (lab[np.maximum(starts + n - 1, 0)] != meta.eos_id)),
        f"labels does not end with EOS ({meta.eos_id})")
    if len(dec) > 1:
        parents = np.repeat(np.arange(len(n)), n)
        same_row = parents[1:] == parents[:-1]
        shifted = same_row & (dec[1:] != lab[:-1])
        bad(np.unique(parents[:-1][shifted]), "labels not aligned with decoder_input_ids (labels[i] != decoder_input_ids[i+1])")


def validate_dataset(path: str) -> ValidationReport:
    """A local dataset is read where it is; one in a store (s3://, gs://) is refused at once without its
    meta.json (an incomplete one), else copied to a temporary directory, checked, and the copy removed."""
    if not is_remote(path):
        return validate_local(path)
    read_meta(path)
    local = localize(path.rstrip("/"))
    try:
        report = validate_local(str(local))
    finally:
        shutil.rmtree(local.parent, ignore_errors=True)
    report.path = path
    return report


def validate_local(path: str) -> ValidationReport:
    root = Path(path)
    report = ValidationReport(str(root))
    meta = read_meta(root)
    tok_file = root / "tokenizer.json"
    if not tok_file.is_file():
        report.add("tokenizer.json missing")
    else:
        if meta.tokenizer_sha256 and file_sha256(tok_file) != meta.tokenizer_sha256:
            report.add("tokenizer.json sha256 differs from meta.json tokenizer_sha256")
        try:
            vocab = load_tokenizer(tok_file).get_vocab_size()
            if vocab != meta.vocab_size:
                report.add(f"tokenizer.json vocab size {vocab} != meta.json vocab_size {meta.vocab_size}")
        except UserError as exc:
            report.add(str(exc))
    for split in SPLITS:
        listed = (meta.raw.get("shards") or {}).get(split) or []
        missing = [name for name in listed if not (root / split / name).is_file() and not (root / name).is_file()]
        for name in missing:
            report.add(f"{split}/{name}: listed in meta.json but missing (deleted or never copied?)")
        try:
            files = split_files(root, split)
        except UserError as exc:
            report.add(str(exc))
            continue
        total = 0
        for file in map(Path, files):
            where, file_rows = f"{split}/{file.name}", 0
            try:
                if file.suffix == ".parquet":
                    handle = pq.ParquetFile(file)
                    schema = handle.schema_arrow
                    missing = [c for c in TRIPLET_COLUMNS if c not in schema.names]
                    if missing:
                        report.add(f"{where}: missing column(s) {', '.join(missing)}")
                        continue
                    for c in TRIPLET_COLUMNS:
                        if schema.field(c).type != TOKENS:
                            report.add(f"{where}: column {c} has type {schema.field(c).type}, expected {TOKENS}")
                    batches = (pa.Table.from_batches([b]) for b in handle.iter_batches(batch_size=8192))
                else:
                    batches = iter_split_tables(root, split)
                for table in batches:
                    check_table(table, meta, where, file_rows, report)
                    file_rows += table.num_rows
            except (OSError, pa.ArrowException, UserError) as exc:
                report.add(f"{where}: cannot read after row {file_rows}: {exc}")
            total += file_rows
        report.rows[split] = total
        expected = meta.samples(split)
        if expected is not None and expected != total:
            report.add(f"{split}: {total} rows but meta.json says {split}_samples = {expected}")
    if report.rows.get("train") == 0:
        report.add("train: no rows, so training would get no batch (prepare it again from a source with documents)")
    return report
