"""Checkpoints: the full training state as a plain dict, written atomically.

A checkpoint directory holds `state.pt` (model, optimizer, scheduler, GradScaler, RNG states, data
position, step, best validation loss, ...) and `meta.json` (step, final, best_val_loss). Under Ray,
rank 0 writes one to a temporary directory and hands it to `ray.train.report`, which keeps the newest
`checkpoint_limit`; without Ray, `CheckpointStore` does the same in the run directory, local or in object
storage (hrm_ray.storage: written locally, then uploaded; the newest copied back to resume from).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm_ray.errors import UserError
from hrm_ray.storage import (
    delete_dir,
    file_size,
    is_file,
    is_remote,
    join,
    list_names,
    localize,
    read_text,
    upload,
)

STATE_FILE = "state.pt"
META_FILE = "meta.json"
BEST_MODEL_DIR = "best-model"
MODEL_FILE = "model.pt"
CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_dir_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write `state` and `meta` into `directory` (created); it appears only once complete."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        torch.save(state, staging / STATE_FILE)
        meta = {**meta, "state_bytes": (staging / STATE_FILE).stat().st_size}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        os.chmod(staging, 0o755)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise UserError(f"checkpoint not found or incomplete: {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def read_meta(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / META_FILE).read_text())


def is_complete(directory: str | Path) -> bool:
    """state.pt and meta.json present and state.pt as long as when written (a copy may stop half way)."""
    directory = Path(directory)
    try:
        expected = read_meta(directory).get("state_bytes")
        return (directory / STATE_FILE).stat().st_size == expected
    except (OSError, ValueError):
        return False


def _name(path: str | Path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


class CheckpointStore:
    """`checkpoint_*` directories in a run directory (local, s3://, gs://): the newest `limit` kept, the final
    one always."""

    def __init__(self, run_dir: str | Path, limit: int):
        self.remote = is_remote(str(run_dir))
        self.run_dir = str(run_dir) if self.remote else Path(run_dir)
        self.limit = limit

    def _remote_complete(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for name in list_names(self.run_dir):
            uri = join(self.run_dir, name)
            try:
                meta = json.loads(read_text(join(uri, META_FILE))) if name.startswith(CHECKPOINT_PREFIX) else {}
                if meta and file_size(join(uri, STATE_FILE)) == meta.get("state_bytes"):
                    found.append((uri, meta))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda item: item[1]["step"])

    def complete(self) -> list[tuple[Path, dict[str, Any]]]:
        """Complete checkpoints with their meta, oldest first. One that vanishes or is half written while
        it is read (Ray persists and prunes its own checkpoints concurrently) is not one."""
        if self.remote:
            return self._remote_complete()
        if not self.run_dir.is_dir():
            return []
        found = []
        for path in self.run_dir.glob(f"{CHECKPOINT_PREFIX}*"):
            try:
                if is_complete(path):
                    found.append((path, read_meta(path)))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda item: item[1]["step"])

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first: local paths, or URIs (str) when the run is remote."""
        return [path for path, _ in self.complete()]

    def names(self) -> list[str]:
        return [_name(path) for path in self.checkpoints()]

    def latest(self) -> Path | None:
        """The newest complete checkpoint, as a local directory (a copy when the run is remote)."""
        found = self.checkpoints()
        return localize(str(found[-1])) if found else None

    def save(self, state: dict[str, Any], meta: dict[str, Any]) -> Path:
        name = checkpoint_dir_name(meta["step"])
        if self.remote:
            with tempfile.TemporaryDirectory() as tmp:
                upload(save_checkpoint(state, Path(tmp, name), meta), join(self.run_dir, name))
            self.prune()
            return Path(join(self.run_dir, name))
        path = save_checkpoint(state, self.run_dir / name, meta)
        self.prune()
        return path

    def prune(self, candidates: Collection[str] | None = None) -> None:
        """Delete all but the newest `limit` by step and the newest final one, whichever run (a resume, a
        restarted worker group) wrote them; with `candidates`, only directories of those names go."""
        if self.limit <= 0:
            return
        complete = self.complete()
        found = [path for path, _ in complete]
        finals = [path for path, meta in complete if meta.get("final")]
        keep = set(found[-self.limit:]) | set(finals[-1:])
        for path in found:
            if path in keep or (candidates is not None and _name(path) not in candidates):
                continue
            if self.remote:
                delete_dir(str(path))
            else:
                shutil.rmtree(path, ignore_errors=True)


def write_best_model(directory: str | Path, model_state: dict[str, torch.Tensor], config_yaml: str,
                     files: dict[str, bytes], meta: dict[str, Any]) -> Path:
    """Fill `directory` with model.pt + config.yaml + the task's files (tokenizer.json, ...) + meta.json
    (the task's meta.json, e.g. the data's special ids, merged with `meta`: step, validation loss)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = dict(files)
    meta = {**json.loads(files.pop(META_FILE, b"{}")), **meta}
    torch.save(model_state, directory / MODEL_FILE)
    (directory / "config.yaml").write_text(config_yaml)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def locate_weights(path: str | Path) -> str:
    """Resolve `--init_from` without reading the weights: a run directory (its best-model, else its latest
    checkpoint), a best-model directory, a checkpoint directory, or a model.pt / state.pt file; local or
    s3://, gs://."""
    path = str(path)
    if is_file(path):
        return path
    for candidate in (join(path, BEST_MODEL_DIR, MODEL_FILE), join(path, MODEL_FILE), join(path, STATE_FILE)):
        if is_file(candidate):
            return candidate
    found = CheckpointStore(path, 0).checkpoints()
    if found:
        return join(str(found[-1]), STATE_FILE)
    raise UserError(f"--init_from: no best-model/, checkpoint or model.pt found at {path}")


def find_weights(path: str | Path) -> Path:
    """The weights file `locate_weights` names, as a local file (copied when remote)."""
    return localize(locate_weights(path))


def load_model_weights(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Model weights only (for the next curriculum stage), from anything `find_weights` accepts; `mmap` maps
    the file instead of reading it (enough to compare shapes)."""
    weights = torch.load(find_weights(path), map_location="cpu", weights_only=False, mmap=mmap)
    return weights["model"] if isinstance(weights, dict) and "model" in weights and "step" in weights else weights
