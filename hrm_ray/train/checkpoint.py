"""Checkpoints: the full training state, written atomically, read back as data only.

A checkpoint directory holds `model.safetensors` (the model's weights), `state.pt` (the rest of the
training state: optimizer, scheduler, GradScaler, RNG states, data position, step, best validation loss,
..., in plain types, read with `torch.load(weights_only=True)`: hrm_ray.train.safe_files) and `meta.json`
(step, final, best_val_loss, the two files' sizes). Checkpoints of older versions (one pickled `state.pt`
with the weights inside, `model.pt` in best-model/) still load, weights-only. Under Ray, rank 0 writes one
to a temporary directory and hands it to `ray.train.report`, which keeps the newest `checkpoint_limit`;
without Ray, `CheckpointStore` does the same in the run directory, local or in object storage
(hrm_ray.storage: written locally, then uploaded; the newest copied back to resume from).
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
from hrm_ray.train.safe_files import (
    convert_legacy_weights,
    is_safetensors,
    load_pickled_data,
    load_safetensors,
    load_weights,
    note_once,
    plain,
    save_weights,
)

STATE_FILE = "state.pt"
META_FILE = "meta.json"
BEST_MODEL_DIR = "best-model"
MODEL_FILE = "model.safetensors"
LEGACY_MODEL_FILE = "model.pt"  # best-model/ weights of older versions: a pickle, read weights-only
CHECKPOINT_PREFIX = "checkpoint_"


def checkpoint_dir_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def rng_state() -> dict[str, Any]:
    """Python's, numpy's and torch's generator states, in types a weights-only load reads."""
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = {"algorithm": algorithm, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["algorithm"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)  # a tuple: checkpoints of older versions
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], directory: str | Path, meta: dict[str, Any]) -> Path:
    """Write `state` (its "model" entry as safetensors, the rest weights-only loadable) and `meta` into
    `directory` (created); it appears only once complete."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        rest = {k: v for k, v in state.items() if k != "model"}
        torch.save(plain(rest), staging / STATE_FILE)
        meta = {**meta, "state_bytes": (staging / STATE_FILE).stat().st_size}
        if "model" in state:
            save_weights(state["model"], staging / MODEL_FILE)
            meta["model_bytes"] = (staging / MODEL_FILE).stat().st_size
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        os.chmod(staging, 0o755)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def load_training_state(directory: str | Path) -> dict[str, Any]:
    """A checkpoint's state.pt, weights-only (an older version's still holds the weights, as "model")."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise UserError(f"checkpoint not found or incomplete: {path}")
    state = load_pickled_data(path)
    if not isinstance(state, dict):
        raise UserError(f"{path}: expected a training state (a dict), got {type(state).__name__}")
    if "model" in state:
        note_once(path, f"{path} is a checkpoint of an older version (pickled weights): read as data only")
    return state


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """The whole training state `save_checkpoint` wrote (what `restore` puts back), weights included."""
    state = load_training_state(directory)
    if (Path(directory) / MODEL_FILE).is_file():
        state["model"] = load_safetensors(Path(directory) / MODEL_FILE)
    elif "model" not in state:
        raise UserError(f"checkpoint incomplete: {Path(directory) / MODEL_FILE} is missing")
    return state


def read_meta(directory: str | Path) -> dict[str, Any]:
    return json.loads((Path(directory) / META_FILE).read_text())


def is_complete(directory: str | Path) -> bool:
    """state.pt, model.safetensors and meta.json present, each file as long as when written (a copy may
    stop half way); checkpoints of older versions have no model.safetensors."""
    directory = Path(directory)
    try:
        meta = read_meta(directory)
        model_ok = "model_bytes" not in meta or (directory / MODEL_FILE).stat().st_size == meta["model_bytes"]
        return model_ok and (directory / STATE_FILE).stat().st_size == meta.get("state_bytes")
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
                model_ok = "model_bytes" not in meta or file_size(join(uri, MODEL_FILE)) == meta["model_bytes"]
                if meta and model_ok and file_size(join(uri, STATE_FILE)) == meta.get("state_bytes"):
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

    def origin(self, checkpoint: Path) -> str:
        """Where a checkpoint `latest` gave lives: its local copy of a remote one is named as the original."""
        return join(self.run_dir, checkpoint.name) if self.remote else str(checkpoint)

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
    """Fill `directory` with model.safetensors + config.yaml + the task's files (tokenizer.json, ...) + meta.json
    (the task's meta.json, e.g. the data's special ids, merged with `meta`: step, validation loss)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = dict(files)
    meta = {**json.loads(files.pop(META_FILE, b"{}")), **meta}
    save_weights(model_state, directory / MODEL_FILE)
    (directory / "config.yaml").write_text(config_yaml)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def locate_weights(path: str | Path) -> str:
    """Resolve `--init_from` without reading the weights: a run directory (its best-model, else its latest
    checkpoint), a best-model directory, a checkpoint directory, or a weights file (model.safetensors,
    model.pt, state.pt: a new state.pt's weights are the model.safetensors beside it); local or s3://, gs://."""
    path = str(path)
    if is_file(path):
        beside = join(path.rstrip("/").rsplit("/", 1)[0], MODEL_FILE)
        return beside if _name(path) == STATE_FILE and is_file(beside) else path
    for directory in (join(path, BEST_MODEL_DIR), path):
        for name in (MODEL_FILE, LEGACY_MODEL_FILE, STATE_FILE):
            if is_file(join(directory, name)):
                return join(directory, name)
    found = CheckpointStore(path, 0).checkpoints()
    if found:
        newest = str(found[-1])
        return join(newest, MODEL_FILE) if is_file(join(newest, MODEL_FILE)) else join(newest, STATE_FILE)
    raise UserError(f"--init_from: no best-model/, checkpoint or model weights found at {path}")


def read_weights_file(path: Path, mmap: bool = False, convert: bool = True) -> dict[str, torch.Tensor]:
    """A weights file as a state_dict: safetensors; else a pickle read weights-only, either a state_dict
    or an older version's training state (its "model"). With `convert` (the user's own file, not a copy from
    object storage) a model.pt is converted (`convert_legacy_weights`)."""
    weights = load_weights(path, mmap=mmap)
    if is_safetensors(path):
        return weights
    if isinstance(weights, dict) and "model" in weights and "step" in weights:
        note_once(path, f"{path} is a checkpoint of an older version (pickled weights): read as data only")
        weights = weights["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UserError(f"{path}: holds no model weights (a state_dict of tensors)")
    if path.name == LEGACY_MODEL_FILE and convert and not mmap:
        convert_legacy_weights(path, weights, path.with_name(MODEL_FILE))
    elif path.name == LEGACY_MODEL_FILE:
        note_once(path, f"{path} is a pickled checkpoint of an older version: read as data only")
    return weights


def load_model_weights(path: str | Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Model weights only (for the next curriculum stage), from anything `locate_weights` accepts (a remote
    file copied here first); `mmap` maps a pickled file instead of reading it (enough to compare shapes)."""
    located = locate_weights(path)
    return read_weights_file(localize(located), mmap=mmap, convert=not is_remote(located))
