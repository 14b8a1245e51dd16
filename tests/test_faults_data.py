"""Data jobs fail cleanly: bad input is one `error:` line naming the file/row/field/flag, a non-zero
exit, and nothing at --dest that looks complete (no dest, no meta.json, no `.NAME.tmp-*` left), also
when the error happens inside a Ray actor or the job is interrupted with Ctrl-C."""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm_ray.atomic import LOCK_FILE
from hrm_ray.cli import build_parser, main
from hrm_ray.commands.data import job_main
from hrm_ray.data.meta import read_meta, write_meta
from hrm_ray.data.tokenizer import file_sha256, save_tokenizer, train_tokenizer
from hrm_ray.data.writer import DatasetWriter

REPO = Path(__file__).resolve().parents[1]
WORDS = "the quick brown fox jumps over a lazy dog near the river bank".split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_tokenizer([" ".join(WORDS)] * 20, vocab_size=300, num_threads=1), path)
    return path


def _docs(n: int, start: int = 0) -> list[dict]:
    return [{"text": f"Document {i}: " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(12))}
            for i in range(start, start + n)]


def _jsonl(path: Path, records: list[dict], extra: bytes = b"") -> Path:
    path.write_bytes("".join(json.dumps(r) + "\n" for r in records).encode() + extra)
    return path


def _corrupt_row_group(path: Path, group: int) -> None:
    """Overwrite the first page header of a row group: reading that group fails, the others do not."""
    column = pq.ParquetFile(path).metadata.row_group(group).column(0)
    offset = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 12] = b"\xff" * 12
    path.write_bytes(bytes(data))


def _prepare(capsys, tokenizer: Path | None, dest: Path, *args: str) -> tuple[int, str]:
    argv = ["data", "prepare", "--dest", str(dest), "--max-seq-len", "32", "--tokenizer-workers", "1", *args]
    code = main(argv + (["--tokenizer", str(tokenizer)] if tokenizer else ["--vocab-size", "300"]))
    return code, capsys.readouterr().err


def _assert_failed_cleanly(code: int, err: str, dest: Path, *named: str) -> None:
    """Non-zero exit, one `error:` line (the last) naming what is wrong, nothing at or beside --dest."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code != 0 and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    for part in named:
        assert part in errors[0], (part, errors[0])
    assert not dest.exists()
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}.")] == []


@pytest.mark.timeout(60)
def test_unreadable_files_bad_dest_and_bad_flags_fail_before_any_work(ray_session, tmp_path, capsys, tokenizer):
    dest = tmp_path / "out"
    good = _jsonl(tmp_path / "good.jsonl", _docs(5))
    (tmp_path / "empty.parquet").write_bytes(b"")
    pq.write_table(pa.Table.from_pylist(_docs(50)), tmp_path / "whole.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "whole.parquet").read_bytes()[:300])
    (tmp_path / "latin1.txt").write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "zero.jsonl").write_bytes(b"")
    (tmp_path / "zero.txt").write_bytes(b"")
    (tmp_path / "a_file").write_text("not a directory")
    cases = [
        (["--source", str(tmp_path / "empty.parquet")], ["empty.parquet", "not a readable Parquet file"]),
        (["--source", str(tmp_path / "cut.parquet")], ["cut.parquet", "not a readable Parquet file"]),
        (["--source", str(tmp_path / "latin1.txt")], ["latin1.txt: line 2 (byte offset 14)", "not valid UTF-8"]),
        (["--source", str(tmp_path / "zero.jsonl")], ["--source", "zero.jsonl has no records"]),
        (["--source", str(good), str(tmp_path / "zero.txt")], ["--source", "zero.txt has no records"]),
        (["--source", str(good), "--rows-per-shard", "0"], ["--rows-per-shard must be >= 1, got 0"]),
        (["--source", str(good), "--rows-per-shard", "-5"], ["--rows-per-shard must be >= 1, got -5"]),
        (["--source", str(good), "--max-records", "0"], ["--max-records must be >= 1"]),
    ]
    for args, named in cases:
        _assert_failed_cleanly(*_prepare(capsys, tokenizer, dest, *args), dest, *named)
    code, err = _prepare(capsys, tokenizer, tmp_path / "a_file", "--source", str(good))
    assert code == 2 and err.strip() == (f"error: --dest {tmp_path / 'a_file'} is an existing file, "
                                         "not a directory (choose another path)")
    assert (tmp_path / "a_file").read_text() == "not a directory"


@pytest.mark.timeout(90)
def test_read_errors_inside_actors_name_file_and_place(ray_session, tmp_path, capsys, tokenizer):
    """The driver reads only each file's first record (with --tokenizer): these errors happen in the
    tokenizer actors and still come back as one line naming the later file and its row group / line."""
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.Table.from_pylist(_docs(200)), src / "a.parquet", row_group_size=50)
    pq.write_table(pa.Table.from_pylist(_docs(200, 200)), src / "b.parquet", row_group_size=50)
    _corrupt_row_group(src / "b.parquet", 2)
    dest = tmp_path / "out"
    # A failed job frees its actors' CPUs, so that the next job of the same driver gets them: checked in a
    # driver of its own, as users run jobs. Here pytest keeps each test's log records, and Ray Data logs the
    # actor's error with a traceback whose frames refer to the actor: its CPUs stay taken until the records go
    # (hence the driver runs before this test's own failed jobs).
    driver = subprocess.run([sys.executable, "-c", FAILED_JOB_DRIVER, "data", "prepare", "--source", str(src),
                             "--dest", str(dest), "--max-seq-len", "32", "--tokenizer-workers", "1",
                             "--tokenizer", str(tokenizer)],
                            env={**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address},
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert driver.returncode == 0, driver.stdout[-2000:] + driver.stderr[-3000:]
    result = json.loads(driver.stdout.strip().splitlines()[-1])
    assert result["code"] == 2 and result["before"] >= 1, result
    assert result["after"] >= result["before"], f"the failed job's actors kept their CPUs: {result}"
    _assert_failed_cleanly(*_prepare(capsys, tokenizer, dest, "--source", str(src)), dest,
                           f"{src / 'b.parquet'}: row group 2 (rows 100-149): cannot read")
    bad = _jsonl(tmp_path / "bad.jsonl", _docs(3), extra=b'{"text": "caf\xe9"}\n')
    _assert_failed_cleanly(*_prepare(capsys, tokenizer, dest, "--source", str(bad)), dest,
                           "bad.jsonl: line 4 (byte offset", "not valid UTF-8")


# A user's driver (the test session's Ray as its cluster): a job that fails in its actors, then the CPUs it
# had taken, as soon as they are all back (within 10 s) or not.
FAILED_JOB_DRIVER = """
import json, sys, time
import ray
ray.init(log_to_driver=False)
from hrm_ray.cli import main
def free():
    return ray.available_resources().get("CPU", 0.0)
before = free()
code = main(sys.argv[1:])
deadline = time.monotonic() + 10
while free() < before and time.monotonic() < deadline:
    time.sleep(0.1)
print(json.dumps({"code": code, "before": before, "after": free()}))
"""


@pytest.mark.timeout(60)
def test_no_usable_document_or_no_train_sample_is_an_error(ray_session, tmp_path, capsys, tokenizer):
    french = _jsonl(tmp_path / "fr.jsonl", [{"text": "Bonjour le monde", "language": "fr"}] * 3)
    dest = tmp_path / "out"
    _assert_failed_cleanly(*_prepare(capsys, tokenizer, dest, "--source", str(french), "--language", "en"),
                           dest, f"--source {french}: no usable document", "language 3")
    one = _jsonl(tmp_path / "one.jsonl", _docs(1))
    _assert_failed_cleanly(*_prepare(capsys, tokenizer, dest, "--source", str(one), "--val-ratio", "0.99"),
                           dest, "no training sample", "--val-ratio")


@pytest.mark.timeout(30)
def test_validate_rejects_an_empty_train_split(tmp_path, capsys):
    root = tmp_path / "ds"
    root.mkdir()
    tok = train_tokenizer([" ".join(WORDS)] * 5, 300, 1)
    save_tokenizer(tok, root / "tokenizer.json")
    writer = DatasetWriter(root)
    writer.write("val", pa.table({"encoder_ids": [[4, 5]], "decoder_input_ids": [[1, 6]], "labels": [[6, 2]]}))
    writer.close()
    write_meta(root, {"vocab_size": tok.get_vocab_size(), "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_seq_len": 8,
                      "train_samples": 0, "val_samples": 1, "tokenizer_sha256": file_sha256(root / "tokenizer.json")})
    assert main(["data", "validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"INVALID {root}: 1 problem(s)") and "train: no rows" in out


@pytest.mark.timeout(60)
def test_max_records_stops_reading_and_stale_staging_is_removed(ray_session, tmp_path, capsys):
    """Nothing after a file's first N records is read: a broken line or a corrupt row group there
    does not matter. A staging directory a crashed run left is removed; a live one is not."""
    src = tmp_path / "src"
    src.mkdir()
    _jsonl(src / "a.jsonl", _docs(100), extra=b"{broken json\n\xff\xfe\n")
    pq.write_table(pa.Table.from_pylist(_docs(200, 100)), src / "b.parquet", row_group_size=50)
    _corrupt_row_group(src / "b.parquet", 2)
    dest = tmp_path / "out"
    stale, live = tmp_path / ".out.tmp-0badc0de", tmp_path / ".out.tmp-11ve0000"
    for staging in (stale, live):
        (staging / "train").mkdir(parents=True)
        (staging / "train" / "part-00000-00000.parquet").write_bytes(b"half a shard")
        (staging / LOCK_FILE).touch()
        os.utime(staging / LOCK_FILE, (time.time() - 3600, time.time() - 3600))
    held = os.open(live / LOCK_FILE, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        code, err = _prepare(capsys, None, dest, "--source", str(src), "--max-records", "100")
    finally:
        os.close(held)
    assert code == 0, err
    meta = read_meta(dest)
    assert json.loads((dest / "meta.json").read_text())["counts"]["documents_read"] == 200
    assert meta.train_samples > 0 and not (dest / LOCK_FILE).exists()
    assert not stale.exists() and live.exists()


@pytest.mark.timeout(30)
def test_max_records_applies_while_reading_each_piece_in_order(tmp_path):
    """Files cut into many pieces: each piece reads only up to the file's N-th record."""
    from hrm_ray.data.records import find_files
    from hrm_ray.data.work_units import piece_record_batches, plan_units

    _jsonl(tmp_path / "a.jsonl", _docs(300), extra=b"{broken\n" + "".join(json.dumps(d) + "\n" for d in _docs(100)).encode())
    pq.write_table(pa.Table.from_pylist(_docs(400)), tmp_path / "b.parquet", row_group_size=50)
    _corrupt_row_group(tmp_path / "b.parquet", 6)
    units = plan_units(find_files([str(tmp_path)]), unit_bytes=1500, max_records=300)
    got: dict[str, list] = {"a.jsonl": [], "b.parquet": []}
    for piece in (p for u in units for p in u.pieces):
        assert piece.first_record == len(got[piece.prefix]) < 300
        got[piece.prefix] += [r for b in piece_record_batches(piece, 64, limit=300 - piece.first_record) for r in b]
    assert len(units) > 4 and got == {"a.jsonl": _docs(300), "b.parquet": _docs(300)}


@pytest.mark.timeout(90)
def test_ctrl_c_leaves_nothing_behind(ray_session, tmp_path):
    """SIGINT once the actors write shards: exit non-zero, no dest, no staging directory, also after the
    actors that were still running have had time to write more."""
    lines = (json.dumps({"text": " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(60))}) for i in range(50_000))
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")  # ~17 MB: 4 units, several seconds of work
    dest = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    cmd = [sys.executable, "-m", "hrm_ray.cli", "data", "prepare", "--source", str(tmp_path / "big.jsonl"),
           "--dest", str(dest), "--vocab-size", "300", "--tokenizer-sample-chars", "20000", "--max-seq-len", "32",
           "--tokenizer-workers", "1", "--rows-per-shard", "200"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.tmp-*/train/*.parquet")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "error: hrm-ray data: interrupted", err
    assert "Traceback" not in err, err
    for _ in range(3):
        assert sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"], err[-2000:]
        time.sleep(0.5)


def _parsers(parser: argparse.ArgumentParser, path: str):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


@pytest.mark.timeout(30)
def test_no_parser_accepts_abbreviated_flags(tmp_path, capsys):
    # --source is not --source-csv
    code = main(["puzzle-data", "sudoku", "--puzzles", str(tmp_path / "p.txt"), "--source", "x",
                 "--output-dir", str(tmp_path / "s")])
    assert code == 2 and "unknown flag '--source'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    with pytest.raises(SystemExit) as exit_info:  # the data_jobs/ scripts' own parsers too
        job_main("prepare", ["--sourc", "x", "--dest", str(tmp_path / "d")])
    assert exit_info.value.code == 2 and "--source" in capsys.readouterr().err
    allowing = [path for path, parser in _parsers(build_parser(), "hrm-ray") if parser.allow_abbrev]
    assert allowing == [], f"these parsers accept abbreviated flags: {allowing}"
