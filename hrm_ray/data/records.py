"""Read records (dicts) from any supported file format, and resolve field paths in them.

Formats: .parquet, .arrow (IPC file or stream, as written by `datasets`), .jsonl,
.jsonl.gz, .json (a list of records, {"data": [...]}, SQuAD-style nested
`data[].paragraphs[].qas[]`, or JSON lines), .txt (documents of at most ~1 MiB cut at
line breaks). Readers stream, except .json, which must be parsed whole. A file that cannot be
read (truncated, corrupt, not UTF-8) is a UserError naming it, and the row group or the line and
byte offset where that is known, also when it happens inside a Ray worker.
"""
from __future__ import annotations

import gzip
import itertools
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hrm_ray.errors import UserError

SUFFIXES = (".parquet", ".arrow", ".jsonl", ".jsonl.gz", ".json", ".txt")
TXT_DOC_CHARS = 1 << 20
_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_AFTER_LONE_CR = re.compile(r"(?<=\r)(?!\n)")
READ_ERRORS = (OSError, EOFError, zlib.error, pa.ArrowException)


def _reason(exc: BaseException) -> str:
    """An exception's message on one line (Arrow's can span several)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def guard_reads(path: str | Path, items: Iterator, where: str = "") -> Iterator:
    """`items`, with read errors (I/O, decompression, Arrow) turned into a UserError naming the file."""
    try:
        yield from items
    except READ_ERRORS as exc:
        raise UserError(f"{path}: {where}cannot read ({_reason(exc)})") from exc


def open_parquet(path: str | Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except READ_ERRORS as exc:
        raise UserError(f"{path}: not a readable Parquet file ({_reason(exc)})") from exc


def parquet_batches(path: str | Path, batch_size: int, row_groups: tuple[int, ...] | None = None,
                    fields: set[str] | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches of the given row groups (default: all), read one row group at a time so that
    a corrupt one is named; `fields`: read only these columns."""
    source = open_parquet(path)
    columns = [c for c in source.schema_arrow.names if fields is None or c in fields]
    meta = source.metadata
    first_rows = [0, *itertools.accumulate(meta.row_group(i).num_rows for i in range(meta.num_row_groups))]
    for group in range(meta.num_row_groups) if row_groups is None else row_groups:
        where = f"row group {group} (rows {first_rows[group]}-{first_rows[group + 1] - 1}): "
        yield from guard_reads(path, source.iter_batches(batch_size=batch_size, row_groups=[group],
                                                         columns=columns), where)


def file_format(path: str | Path) -> str:
    name = str(path).lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise UserError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")


def find_files(sources: list[str] | str, max_files: int | None = None) -> list[tuple[Path, str]]:
    """Supported files under the given files/directories, sorted, as (path, id prefix) pairs.

    The id prefix is the path relative to its source root, so document ids (and with them the
    train/val split) do not change when the data moves.
    """
    if isinstance(sources, str):
        sources = [sources]
    found: list[tuple[Path, str]] = []
    for source in sources:
        root = Path(source)
        if root.is_file():
            file_format(root)
            found.append((root, root.name))
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and any(str(p).lower().endswith(s) for s in SUFFIXES))
            found.extend((p, str(p.relative_to(root))) for p in files)
        else:
            raise UserError(f"--source not found: {root}")
    if not found:
        raise UserError(f"no supported files ({', '.join(SUFFIXES)}) in {', '.join(map(str, sources))}")
    return found[:max_files] if max_files else found


def iter_record_batches(path: str | Path, batch_size: int = 1024,
                        limit: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Records of one file in lists of at most `batch_size`; with `limit`, only the first `limit`
    records, and nothing after them is read or parsed."""
    path = Path(path)
    fmt = file_format(path)
    if fmt in (".parquet", ".arrow"):
        batches = parquet_batches(path, batch_size) if fmt == ".parquet" else _arrow_batches(path)
        yield from guard_reads(path, limit_batches(batches, batch_size, limit))
        return
    if fmt == ".txt":
        records = ({"text": doc} for doc in _txt_documents(path))
    elif fmt == ".json":
        records = _json_iter(path)
    else:
        records = _jsonl_records(path)
    yield from guard_reads(path, chunked(itertools.islice(records, limit), batch_size))


def limit_batches(batches: Iterator[pa.RecordBatch], batch_size: int,
                  limit: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """Arrow batches as lists of at most `batch_size` records, stopping after `limit` records."""
    left = limit
    for batch in batches:
        if left is not None:
            batch = batch.slice(0, left)
            left -= batch.num_rows
        for start in range(0, batch.num_rows, batch_size):
            yield batch.slice(start, batch_size).to_pylist()
        if left == 0:
            return


def chunked(records: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for record in records:
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_records(path: str | Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    for batch in iter_record_batches(path, limit=limit):
        yield from batch


def _arrow_batches(path: Path) -> Iterator[pa.RecordBatch]:
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        except pa.ArrowInvalid:
            source.seek(0)
        try:
            yield from pa.ipc.open_stream(source)
        except pa.ArrowInvalid as exc:
            raise UserError(f"{path}: not an Arrow IPC file or stream: {exc}") from exc


def decode_line(path: Path, raw: bytes, lineno: int, offset: int) -> str:
    """`raw` (line `lineno`, starting at byte `offset` of the file) as text."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, lineno, offset) from None


def not_utf8(path: Path, exc: UnicodeDecodeError, lineno: int, offset: int = 0) -> UserError:
    return UserError(f"{path}: line {lineno} (byte offset {offset + exc.start}): not valid UTF-8 "
                     f"({exc.reason}); convert the file to UTF-8")


def universal_lines(path: Path, handle: Any) -> Iterator[tuple[int, str]]:
    """(line number, text) of a binary file's lines, cut after LF, CRLF and a lone CR like Python's
    text mode (line endings kept); a line that is not UTF-8 is named by line and byte offset."""
    lineno = offset = 0
    for raw in handle:
        text = decode_line(path, raw, lineno + 1, offset)
        offset += len(raw)
        for line in _AFTER_LONE_CR.split(text) if "\r" in text else (text,):
            if line:
                lineno += 1
                yield lineno, line


def numbered_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a .jsonl or .jsonl.gz file."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        for lineno, line in guard_reads(path, universal_lines(path, handle)):
            if line.strip():
                yield lineno, _jsonl_object(path, lineno, line)


def jsonl_line_records(path: Path, start: int, stop: int, first_line: int) -> Iterator[dict[str, Any]]:
    """Objects of the non-blank lines of a plain .jsonl file that start in bytes [start, stop);
    `start` is a line start and `first_line` its line number (for error messages)."""
    with open(path, "rb") as handle:
        handle.seek(start)
        pos, lineno = start, first_line
        for line in handle:
            if pos >= stop:
                break
            if line.strip():
                yield _jsonl_object(path, lineno, decode_line(path, line, lineno, pos))
            pos += len(line)
            lineno += 1


def _jsonl_object(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: line {lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(record, dict):
        raise UserError(f"{path}: line {lineno}: expected a JSON object, got {type(record).__name__}")
    return record


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    return (record for _, record in numbered_jsonl(path))


def _json_iter(path: Path) -> Iterator[dict[str, Any]]:
    yield from _json_records(path)  # read when iterated, inside the caller's read-error guard


def _json_records(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, exc, raw.count(b"\n", 0, exc.start) + 1) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON lines in a .json file
            return list(_jsonl_records(path))
        raise UserError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
        if data and isinstance(data[0], dict) and "paragraphs" in data[0]:
            return list(flatten_squad(data))
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise UserError(f"{path}: expected a list of JSON objects, {{\"data\": [...]}} or SQuAD-style nesting")
    return data


def flatten_squad(articles: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """SQuAD nesting data[].paragraphs[].qas[] -> flat records like Hugging Face `squad`:
    {id, title, context, question, answers: {text: [...], answer_start: [...]}}."""
    for article in articles:
        for paragraph in article.get("paragraphs", []):
            for qa in paragraph.get("qas", []):
                answers = qa.get("answers", [])
                yield {
                    "id": qa.get("id"),
                    "title": article.get("title"),
                    "context": paragraph.get("context"),
                    "question": qa.get("question"),
                    "answers": {"text": [a.get("text") for a in answers],
                                "answer_start": [a.get("answer_start") for a in answers]},
                    "is_impossible": qa.get("is_impossible", False),
                }


def _txt_documents(path: Path) -> Iterator[str]:
    """A text file as documents of at most ~TXT_DOC_CHARS, cut after a line break."""
    with open(path, "rb") as handle:
        buffer: list[str] = []
        size = 0
        for _, line in universal_lines(path, handle):
            buffer.append(line)
            size += len(line)
            if size >= TXT_DOC_CHARS:
                yield "".join(buffer)
                buffer, size = [], 0
        if size:
            yield "".join(buffer)


class FieldError(KeyError):
    """A field path did not resolve; `str()` says which part was missing."""

    def __str__(self) -> str:
        return self.args[0]


def parse_field_path(path: str) -> list[str | int]:
    """`data.answers.text[0]` -> ["data", "answers", "text", 0]."""
    parts: list[str | int] = []
    pos = 0
    for match in _PATH_TOKEN.finditer(path):
        key, index = match.groups()
        parts.append(int(index) if index is not None else key)
        pos = match.end()
    if not parts or pos != len(path) or ".." in path or path.startswith("."):
        raise UserError(f"invalid field path {path!r} (expected e.g. question or answers.text[0])")
    return parts


def get_field(record: Any, path: str | list[str | int]) -> Any:
    """Resolve a field path in a record; raises FieldError naming the missing part."""
    parts = parse_field_path(path) if isinstance(path, str) else path
    value = record
    for depth, part in enumerate(parts):
        where = _format_path(parts[: depth + 1])
        if isinstance(part, int):
            if not isinstance(value, (list, tuple)) or part >= len(value):
                raise FieldError(f"field '{where}' not found (no element {part})")
            value = value[part]
        else:
            if not isinstance(value, dict) or part not in value:
                raise FieldError(f"field '{where}' not found")
            value = value[part]
    if value is None:
        raise FieldError(f"field '{_format_path(parts)}' is null")
    return value


def _format_path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def write_jsonl_atomic(path: str | Path, records: Iterator[dict[str, Any]]) -> int:
    """Write records as JSON lines to a temporary file renamed to `path` when complete."""
    import os

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count
