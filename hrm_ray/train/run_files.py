"""Files a run keeps beside Ray's checkpoints (config.yaml, metrics.jsonl, best-model/).

The run directory is a local path or a URI Ray also accepts (s3://, gs://); remote ones go through
pyarrow's filesystems. Local writes are atomic (temporary name, then rename).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from hrm_ray.storage import filesystem, is_file, is_remote, join, read_text, upload


class RunFiles:
    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.remote = is_remote(run_dir)
        self._buffers: dict[str, list[str]] = {}
        if not self.remote:
            Path(run_dir).mkdir(parents=True, exist_ok=True)

    def path(self, rel: str) -> str:
        return join(self.run_dir, rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.remote:
            fs, path = filesystem(self.path(rel))
            with fs.open_output_stream(path) as out:
                out.write(data)
            return
        target = Path(self.path(rel))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)

    def append_line(self, rel: str, line: str) -> None:
        """Append one line; remote files are rewritten whole (object stores cannot append), starting from what
        an earlier process (the run before a resume) left there."""
        if self.remote:
            if rel not in self._buffers:
                self._buffers[rel] = read_text(self.path(rel)).splitlines() if is_file(self.path(rel)) else []
            lines = self._buffers[rel]
            lines.append(line)
            self.write_bytes(rel, "".join(f"{x}\n" for x in lines).encode())
            return
        with open(self.path(rel), "a") as out:
            out.write(line + "\n")

    def put_dir(self, local_dir: str | Path, rel: str) -> None:
        """Replace `rel` with a copy of `local_dir`; locally the old copy stays until the new one is whole."""
        if self.remote:
            upload(local_dir, self.path(rel))
            return
        target = Path(self.path(rel))
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        shutil.copytree(local_dir, staging, dirs_exist_ok=True)
        os.chmod(staging, 0o755)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
