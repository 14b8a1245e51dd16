"""Directories that appear whole or not at all: build in a hidden sibling, then swap into place.

The hidden `.NAME.tmp-*` directory holds an exclusive lock (`LOCK_FILE`, flock) while its job runs,
so the next job for the same NAME can tell one left by a crashed or killed job (nobody holds its
lock) from one being written right now, and remove only the former.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".staging.lock"
FRESH_S = 10.0  # a staging directory this young may not hold its lock yet: never treated as stale


@contextmanager
def staged_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a hidden temporary directory beside `dest`; on success it replaces `dest` (an existing
    `dest` stays until the new one is in place), on any failure (Ctrl-C included) it is deleted. A
    killed process leaves only the hidden `.NAME.tmp-*` directory, never something that looks
    complete, and the next `staged_dir(dest)` removes it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(dest)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    lock = _hold_lock(tmp / LOCK_FILE)
    try:
        yield tmp
    except BaseException:
        discard(tmp)
        os.close(lock)
        raise
    (tmp / LOCK_FILE).unlink(missing_ok=True)  # while still held: the directory stays "live"
    os.close(lock)
    if dest.exists():
        trash = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, trash)
        os.replace(tmp, dest)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def _hold_lock(path: Path) -> int:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # a filesystem without flock: others cannot lock it either, so it is never taken for stale
    return fd


def _is_stale(staging: Path) -> bool:
    """Nobody holds the directory's lock, and the lock (or, without one, the directory) is older
    than FRESH_S: a job that has just created its directory may not hold the lock yet."""
    try:
        fd = os.open(staging / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:  # left by a version without locks, or its job is swapping it into place
        try:
            return time.time() - staging.stat().st_mtime >= FRESH_S
        except FileNotFoundError:
            return False
    except OSError:
        return False
    try:
        if time.time() - os.fstat(fd).st_mtime < FRESH_S:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_staging(dest: str | Path) -> list[Path]:
    """Remove the `.NAME.tmp-*` directories a crashed or killed job for `dest` left beside it, and
    `.NAME.old-*` ones an interrupted swap left; returns what was removed."""
    dest = Path(dest)
    prefix = f".{dest.name}."
    removed = []
    for path in sorted(dest.parent.iterdir()):
        kind = path.name[len(prefix):].split("-", 1)[0] if path.name.startswith(prefix) else ""
        if kind not in ("tmp", "old") or path.is_symlink() or not path.is_dir():
            continue
        if kind == "old" or _is_stale(path):
            discard(path)
            removed.append(path)
    return removed


def discard(staging: Path) -> None:
    """Delete a staging directory that workers may still be writing into. It is renamed first:
    a worker that opens a path in it afterwards fails (writers never recreate missing parents)
    instead of bringing it back; a write already under way when it was renamed is waited out."""
    gone = staging.with_name(f"{staging.name}-discarded")
    try:
        os.rename(staging, gone)
    except FileNotFoundError:
        return
    except OSError:
        gone = staging
    for _ in range(50):
        shutil.rmtree(gone, ignore_errors=True)
        if not gone.exists():
            return
        time.sleep(0.02)
