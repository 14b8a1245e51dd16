"""Checkpoint files read as data, never as code.

Model weights are safetensors files (a header and raw tensor bytes: nothing in them can run). The
training state (optimizer, lr schedule, scaler, RNG states, data position, counters, config) is a
`torch.save` pickle read back with `weights_only=True`: tensors, dicts, lists, tuples, strings and
numbers load, anything that would import and call a function is refused. The state is written with
plain types only (`plain` turns numpy values into tensors and Python numbers), so no extra type is
allowed in; `LEGACY_GLOBALS` admits the numpy arrays that checkpoints of older versions hold (numpy's
RNG state), which are data too (an array of objects would need further globals, and those are refused).

Pickled weights of older versions (`model.pt`, the `model` entry of an old `state.pt`) and other
projects' `torch.save(state_dict)` files load the same way, weights-only.
"""
from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hrm_ray.errors import UserError

_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
# numpy arrays in checkpoints of older versions (numpy 2 and numpy 1 name the same function)
LEGACY_GLOBALS = [_reconstruct, (_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
                  type(np.dtype(np.uint32))]
_noted: set[str] = set()


def refusal(path: str | Path, exc: BaseException) -> UserError:
    """One line for a file `torch.load(weights_only=True)` would not read: code refused, or damage."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"got <class '([\w.]+)'>", text)
    if isinstance(exc, pickle.UnpicklingError) and ("Weights only load failed" in text or found):
        what = f" ({found.group(1)})" if found else ""
        return UserError(f"{path}: refused: it contains code{what}, not only data (checkpoints are loaded as data, "
                         f"never run)")
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return UserError(f"cannot read {path}: {type(exc).__name__}: {first}")


def load_pickled_data(path: str | Path, mmap: bool = False) -> Any:
    """A `torch.save` file, weights-only: a UserError naming the file when it holds code or is damaged."""
    try:
        with torch.serialization.safe_globals(LEGACY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise UserError(f"not found: {path}") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError) as exc:
        raise refusal(path, exc) from None


def _storable(weights: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """CPU tensors, contiguous, none sharing memory with another (tied weights are stored twice)."""
    out, seen = {}, set()
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{path}: weight '{name}' is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu")
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out


def save_weights(weights: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a state_dict as safetensors, atomically (a temporary file beside it, renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(_storable(weights, path), tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except FileNotFoundError:
        raise UserError(f"not found: {path}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {' '.join(str(exc).split())}") from None


def is_safetensors(path: str | Path) -> bool:
    return str(path).endswith(".safetensors")


def load_weights(path: str | Path, mmap: bool = False) -> Any:
    """A weights file: safetensors, else a pickle read weights-only (`mmap`: mapped, not read)."""
    return load_safetensors(path) if is_safetensors(path) else load_pickled_data(path, mmap=mmap)


def note_once(path: str | Path, message: str) -> None:
    """Print `note: <message>` the first time this process reads `path`."""
    if str(path) not in _noted:
        _noted.add(str(path))
        print(f"note: {message}")


def convert_legacy_weights(path: Path, weights: dict[str, torch.Tensor], target: Path) -> None:
    """An older version's pickled model.pt, just read as data: its weights written beside it as `target`
    (model.pt stays), so the next read is safetensors. A directory not writable keeps the in-memory copy."""
    try:
        save_weights(weights, target)
        note_once(path, f"{path} is a pickled checkpoint of an older version: read as data only and converted to "
                        f"{target.name} beside it")
    except OSError:
        note_once(path, f"{path} is a pickled checkpoint of an older version: read as data only (its directory "
                        f"is not writable, so it stays unconverted)")


def plain(value: Any) -> Any:
    """`value` with numpy arrays as tensors and numpy scalars as Python numbers, recursively: what
    `torch.load(weights_only=True)` reads without any extra allowed type."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, OrderedDict):
        return OrderedDict((k, plain(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(plain(v) for v in value)
    return value
