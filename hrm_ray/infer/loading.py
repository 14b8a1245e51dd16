"""Load a trained HRM x LM for inference from a run directory, its best-model/, or a checkpoint_* dir.

A model directory holds config.yaml (the full Config tree), tokenizer.json, meta.json and the weights:
model.safetensors (best-model/ and checkpoints), or, written by older versions, model.pt (best-model/) or
state.pt with a "model" entry (checkpoints), both read weights-only (hrm_ray.train.safe_files). Runs are
found through `hrm_ray.storage` (local, s3://, gs://); a remote model directory is copied to a temporary
directory, with its run's config.yaml and tokenizer.json beside it.
"""
from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from hrm_ray.config import Config, load_yaml
from hrm_ray.data.tokenizer import load_tokenizer
from hrm_ray.errors import UserError
from hrm_ray.models.lm import HRMLanguageModel
from hrm_ray.models.registry import build_model
from hrm_ray.storage import is_dir, is_file, is_remote, join, list_names, localize, read_text, resolve_root
from hrm_ray.train.checkpoint import (
    BEST_MODEL_DIR,
    CHECKPOINT_PREFIX,
    LEGACY_MODEL_FILE,
    META_FILE,
    MODEL_FILE,
    STATE_FILE,
    read_weights_file,
)

CONFIG_FILE = "config.yaml"
TOKENIZER_FILE = "tokenizer.json"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
FETCHED_PREFIX = "hrm-ray-model-"  # temporary copies of remote model directories


@dataclass
class LoadedModel:
    model: HRMLanguageModel
    tokenizer: Tokenizer
    config: Config
    path: Path  # the model directory the weights came from


def _checkpoint_step(directory: str) -> int:
    """A checkpoint's step: meta.json's "step", else the number in the directory name."""
    try:
        return int(json.loads(read_text(join(directory, META_FILE)))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        digits = re.findall(r"\d+", directory.rstrip("/").rsplit("/", 1)[-1])
        return int(digits[-1]) if digits else -1


WEIGHT_FILES = (MODEL_FILE, LEGACY_MODEL_FILE, STATE_FILE)  # where a model directory's weights are, in order


def is_model_dir(path: str | Path) -> bool:
    return any(is_file(join(str(path), name)) for name in WEIGHT_FILES)


def _parent(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[0] if is_remote(uri) else str(Path(uri).parent)


def fetch_model_dir(uri: str) -> Path:
    """A local model directory: `uri` itself, or a copy of the remote one with its run's config.yaml and
    tokenizer.json beside it (what `companion_file` looks for)."""
    if not is_remote(uri):
        return Path(uri)
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    local_run = Path(tempfile.mkdtemp(prefix=FETCHED_PREFIX))
    for companion in (CONFIG_FILE, TOKENIZER_FILE):
        if is_file(join(_parent(uri), companion)):
            localize(join(_parent(uri), companion), local_run / companion)
    return localize(uri, local_run / name)


def newest_model_dir(run_dir: str, flag: str) -> str:
    """`<run_dir>/best-model` if present, else its newest checkpoint_* holding state.pt."""
    if not is_dir(run_dir):
        raise UserError(f"{flag}: run directory not found: {run_dir}")
    best = join(run_dir, BEST_MODEL_DIR)
    if is_model_dir(best):
        return best
    names = [n for n in list_names(run_dir) if n.startswith(CHECKPOINT_PREFIX)]
    checkpoints = [join(run_dir, n) for n in names if is_file(join(run_dir, n, STATE_FILE))]
    if not checkpoints:
        raise UserError(f"{flag}: {run_dir} has no {BEST_MODEL_DIR}/ and no {CHECKPOINT_PREFIX}* checkpoint")
    return max(checkpoints, key=_checkpoint_step)


def resolve_run(run_name: str, save_dir: str | Path = "") -> Path:
    """The model of run `run_name` under `save_dir` (default: the storage root, hrm_ray.storage), local."""
    return fetch_model_dir(newest_model_dir(join(resolve_root(str(save_dir))[0], run_name), "--run_name"))


def resolve_checkpoint(path: str | Path) -> Path:
    """A best-model/ or checkpoint_* directory (or a run directory, read like --run_name), local or remote."""
    path = str(path) if is_remote(str(path)) else str(Path(path).absolute())
    if is_file(path):
        path = _parent(path)
    elif not is_dir(path):
        raise UserError(f"--checkpoint: not found: {path}")
    if is_model_dir(path):
        return fetch_model_dir(path)
    names = list_names(path)
    if BEST_MODEL_DIR in names or any(n.startswith(CHECKPOINT_PREFIX) for n in names):
        return fetch_model_dir(newest_model_dir(path, "--checkpoint"))
    raise UserError(f"--checkpoint: {path} holds none of {', '.join(WEIGHT_FILES)}")


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """The directory's weights (the first of WEIGHT_FILES it has), read as data only."""
    file = next((directory / name for name in WEIGHT_FILES if (directory / name).is_file()), directory / MODEL_FILE)
    if not file.is_file():
        raise UserError(f"{directory}: no model weights ({', '.join(WEIGHT_FILES)})")
    fetched = any(parent.name.startswith(FETCHED_PREFIX) for parent in file.parents)
    state = read_weights_file(file, convert=not fetched)  # an old model.pt of the user's own, not of a copy
    for prefix in WRAPPER_PREFIXES:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    return state


def companion_file(directory: Path, name: str) -> Path:
    """config.yaml / tokenizer.json of a model directory: its own, else its run directory's
    (or the run's best-model/), for checkpoint dirs written without them."""
    for candidate in (directory / name, directory.parent / name, directory.parent / BEST_MODEL_DIR / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"model directory {directory} lacks {name} (and its run directory has none)")


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Build the model from the directory's config.yaml and load its weights (eval mode)."""
    directory = Path(directory)
    cfg = load_yaml(companion_file(directory, CONFIG_FILE))
    tokenizer = load_tokenizer(companion_file(directory, TOKENIZER_FILE))
    if cfg.model.vocab_size <= 0:
        cfg.model.vocab_size = tokenizer.get_vocab_size()
    model = build_model(cfg.model)
    try:
        model.load_state_dict(read_state_dict(directory))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"{directory}: weights do not match {CONFIG_FILE}: {' '.join(first[:3])}") from exc
    return LoadedModel(model.to(device).eval(), tokenizer, cfg, directory)


def load_for_inference(run_name: str | None = None, save_dir: str | Path = "",
                       checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Exactly one of `run_name` (inside `save_dir`) or `checkpoint`."""
    if bool(run_name) == bool(checkpoint):
        raise UserError("give exactly one of --run_name or --checkpoint")
    directory = resolve_checkpoint(checkpoint) if checkpoint else resolve_run(run_name, save_dir)
    return load_model(directory, device)
