"""Cut source files into work units: pieces one worker reads, tokenizes and writes on its own.

A piece is a whole file, a run of Parquet row groups, or a byte range of a plain .jsonl file
(cut at line starts); a unit is one or more consecutive pieces. Units depend only on the files,
never on the cluster, so each unit's output, and with it the whole dataset, is the same on every
run. Each piece knows the number of its first record, so document ids (`prefix:record`) do not
depend on the cut.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hrm_ray.data.records import (
    chunked,
    file_format,
    guard_reads,
    iter_record_batches,
    jsonl_line_records,
    limit_batches,
    open_parquet,
    parquet_batches,
)

UNIT_BYTES = 4 << 20


@dataclass(frozen=True)
class Piece:
    """Part of one file: all of it, some Parquet row groups, or the lines of a .jsonl that start
    in a byte range. `size`: its bytes (uncompressed for Parquet), to pack pieces into units."""
    path: str
    prefix: str
    size: int
    first_record: int = 0
    row_groups: tuple[int, ...] | None = None
    byte_range: tuple[int, int] | None = None
    first_line: int = 1


@dataclass(frozen=True)
class WorkUnit:
    index: int
    pieces: tuple[Piece, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkUnit:
        raw = json.loads(text)
        pieces = []
        for piece in raw["pieces"]:
            for key in ("row_groups", "byte_range"):
                if piece[key] is not None:
                    piece[key] = tuple(piece[key])
            pieces.append(Piece(**piece))
        return cls(raw["index"], tuple(pieces))


def plan_units(files: list[tuple[Path, str]], unit_bytes: int = UNIT_BYTES,
               max_records: int | None = None) -> list[WorkUnit]:
    """Cut large files into pieces of about `unit_bytes` and pack consecutive small pieces into
    units of at least that size: big enough that a unit's fixed costs (a task, its shard files)
    do not matter, small enough that the workers stay evenly busy."""
    units: list[WorkUnit] = []
    packed: list[Piece] = []
    for path, prefix in files:
        fmt = file_format(path)
        if fmt == ".parquet":
            cuts = _parquet_pieces(path, unit_bytes)
        elif fmt == ".jsonl" and path.stat().st_size > unit_bytes:
            cuts = _jsonl_pieces(path, unit_bytes, max_records)
        else:
            cuts = [{"size": path.stat().st_size}]
        for cut in cuts:
            if max_records is not None and cut.get("first_record", 0) >= max_records:
                break
            packed.append(Piece(path=str(path), prefix=prefix, **cut))
            if sum(p.size for p in packed) >= unit_bytes:
                units.append(WorkUnit(len(units), tuple(packed)))
                packed = []
    if packed:
        units.append(WorkUnit(len(units), tuple(packed)))
    return units


def _parquet_pieces(path: Path, unit_bytes: int) -> list[dict[str, Any]]:
    meta = open_parquet(path).metadata
    pieces: list[dict[str, Any]] = []
    groups: list[int] = []
    size = rows = first = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if groups and size + group.total_byte_size > unit_bytes:
            pieces.append({"size": size, "first_record": first, "row_groups": tuple(groups)})
            groups, size, first = [], 0, rows
        groups.append(i)
        size += group.total_byte_size
        rows += group.num_rows
    pieces.append({"size": size, "first_record": first, "row_groups": tuple(groups)})
    return pieces


def _jsonl_pieces(path: Path, unit_bytes: int, max_records: int | None = None) -> list[dict[str, Any]]:
    """Byte ranges of about `unit_bytes`, each starting at a line start, with the record and
    line numbers of their first line (one pass over the file, or its first `max_records` records;
    no JSON parsing)."""
    bounds = [(0, 0, 1)]  # (byte offset, record number, line number) of each piece's first line
    pos = records = 0
    line_no = 1
    with open(path, "rb") as handle:
        for line in handle:
            if max_records is not None and records >= max_records:
                break
            if pos - bounds[-1][0] >= unit_bytes:
                bounds.append((pos, records, line_no))
            pos += len(line)
            records += bool(line.strip())
            line_no += 1
    ends = [b[0] for b in bounds[1:]] + [pos]
    return [{"size": stop - start, "first_record": record, "first_line": line, "byte_range": (start, stop)}
            for (start, record, line), stop in zip(bounds, ends, strict=True)]


def piece_record_batches(piece: Piece, batch_size: int, fields: set[str] | None = None,
                         limit: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """The piece's records in lists of at most `batch_size`; `fields`: Parquet reads only these columns;
    `limit`: only the piece's first `limit` records, nothing after them is read or parsed."""
    if piece.row_groups is not None:
        batches = parquet_batches(piece.path, batch_size, piece.row_groups, fields)
        yield from guard_reads(piece.path, limit_batches(batches, batch_size, limit))
    elif piece.byte_range is not None:
        lines = jsonl_line_records(Path(piece.path), *piece.byte_range, piece.first_line)
        yield from guard_reads(piece.path, chunked(itertools.islice(lines, limit), batch_size))
    else:
        yield from iter_record_batches(piece.path, batch_size, limit)
