"""meta.json of a prepared dataset, and where its splits live.

Two layouts load: ours (`train/` and `val/` Parquet shards) and the seed's
(`train.jsonl`/`val.jsonl`); both carry tokenizer.json and meta.json beside them. A dataset may be a
local directory or a URI (s3://, gs://): everything here reads through hrm_ray.storage.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm_ray.errors import UserError
from hrm_ray.storage import is_dir, is_file, join, list_names, localize, read_text, write_text

SPLITS = ("train", "val")
TRIPLET_COLUMNS = ("encoder_ids", "decoder_input_ids", "labels")


@dataclass
class DatasetMeta:
    path: str
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    max_seq_len: int | None
    train_samples: int | None
    val_samples: int | None
    tokenizer_sha256: str | None
    layout: str
    raw: dict[str, Any] = field(default_factory=dict)

    def samples(self, split: str) -> int | None:
        return self.train_samples if split == "train" else self.val_samples


def layout_of(path: str | Path) -> str:
    path = str(path)
    if any(is_dir(join(path, s)) for s in SPLITS):
        return "parquet"
    if any(is_file(join(path, f"{s}.jsonl")) for s in SPLITS):
        return "jsonl"
    raise UserError(f"{path}: not a prepared dataset (no train/ or val/ Parquet dirs, no train.jsonl/val.jsonl)")


def split_files(path: str | Path, split: str) -> list[str]:
    """The files (local paths or URIs) holding one split, in order; a clear error when the split is missing."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    path = str(path)
    if layout_of(path) == "jsonl":
        file = join(path, f"{split}.jsonl")
        if not is_file(file):
            raise UserError(f"{path}: split '{split}' missing ({split}.jsonl not found)")
        return [file]
    files = [join(path, split, name) for name in list_names(join(path, split)) if name.endswith(".parquet")]
    if not files:
        raise UserError(f"{path}: split '{split}' missing (no Parquet shards in {join(path, split)})")
    return files


def read_dataset_file(path: str | Path, name: str) -> str:
    """The text of `name` (meta.json, tokenizer.json) in a prepared dataset, local or remote."""
    file = join(str(path), name)
    if not is_file(file):
        raise UserError(f"{path}: {name} not found (not a prepared dataset, or an incomplete one?)")
    return read_text(file)


def read_meta(path: str | Path) -> DatasetMeta:
    path = str(path)
    meta_file = join(path, "meta.json")
    try:
        raw = json.loads(read_dataset_file(path, "meta.json"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{meta_file}: invalid JSON: {exc.msg}") from exc
    for key in ("vocab_size", "pad_id"):
        if key not in raw:
            raise UserError(f"{meta_file}: missing key '{key}'")
    bos_id, eos_id = raw.get("bos_id"), raw.get("eos_id")
    if bos_id is None or eos_id is None:  # the seed's meta.json may only name pad and vocab
        from hrm_ray.data.tokenizer import load_tokenizer

        tok = load_tokenizer(localize(join(path, "tokenizer.json")))
        bos_id, eos_id = tok.token_to_id("<bos>"), tok.token_to_id("<eos>")
    return DatasetMeta(
        path=path, vocab_size=int(raw["vocab_size"]), pad_id=int(raw["pad_id"]),
        bos_id=int(bos_id), eos_id=int(eos_id), max_seq_len=raw.get("max_seq_len"),
        train_samples=raw.get("train_samples"), val_samples=raw.get("val_samples"),
        tokenizer_sha256=raw.get("tokenizer_sha256"), layout=layout_of(path), raw=raw,
    )


def write_meta(directory: str | Path, meta: dict[str, Any]) -> None:
    """meta.json into a local directory or a store's prefix (there, one PUT: what marks a dataset complete)."""
    write_text(join(str(directory), "meta.json"), json.dumps(meta, indent=2, sort_keys=True) + "\n")


def check_same_tokenizer(metas: list[DatasetMeta]) -> None:
    """Datasets mixed or merged together must share one tokenizer (compared by sha256)."""
    first = metas[0]
    for other in metas[1:]:
        if other.tokenizer_sha256 != first.tokenizer_sha256 or other.vocab_size != first.vocab_size:
            raise UserError(
                f"datasets use different tokenizers: {first.path} (sha256 {str(first.tokenizer_sha256)[:12]}) "
                f"vs {other.path} (sha256 {str(other.tokenizer_sha256)[:12]}); prepare them with the same --tokenizer")
