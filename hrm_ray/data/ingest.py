"""Streaming ingest of prepared datasets into training (the trainer's entry point to data).

    meta = read_meta(path)                                   # DatasetMeta (vocab, pad/bos/eos, counts)
    ds = load_prepared_split(path, "train")                  # ray.data.Dataset, read lazily
    ds, info = mix_datasets(parse_dataset_spec("A:0.9,B:0.1"), "train", seed=0)
    collate = TripletCollate(meta.pad_id, max_seq_len=512)   # picklable collate_fn
    shard = ray.train.get_dataset_shard("train")             # in the train loop
    for batch in shard.iter_torch_batches(batch_size=32, collate_fn=collate): ...

Batches are the LM format: encoder_ids/encoder_mask [B,S], decoder_input_ids/labels/decoder_mask
[B,T] (labels padded with -100), padded to the longest row of each batch; a mixture adds
`source_id` [B] (index into info["sources"]) so realised proportions can be counted on device.
Both our Parquet layout and the seed's train.jsonl/val.jsonl layout load. Nothing is
materialised (mix_datasets' default shuffle streams; only shuffle="full" goes through the
object store): memory does not grow with the dataset.
"""
from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import ray
import torch
from ray.data import DataContext
from ray.data.collate_fn import NumpyBatchCollateFn

from hrm_ray.data.meta import DatasetMeta, check_same_tokenizer, read_meta, split_files
from hrm_ray.data.quotas import plan_mix, proportions
from hrm_ray.data.tags import tag_source
from hrm_ray.errors import UserError
from hrm_ray.ray_env import data_task_cpus
from hrm_ray.storage import filesystem

__all__ = ["DatasetMeta", "read_meta", "load_prepared_split", "mix_datasets", "collate_triplets",
           "TripletCollate", "parse_dataset_spec", "IGNORE_INDEX"]

IGNORE_INDEX = -100
SHUFFLES = ("none", "files", "full")


def load_prepared_split(path: str, split: str, shuffle_seed: int | None = None) -> ray.data.Dataset:
    """One split of a prepared dataset as a lazily read Ray Dataset (shards in a seeded random
    order when `shuffle_seed` is given); its tasks take `data_task_cpus()` CPUs each. A URI's Parquet shards
    are read through hrm_ray.storage's filesystem (so an S3-compatible endpoint from the environment works)."""
    files = split_files(path, split)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(files)
    if files[0].endswith(".jsonl"):  # Ray's lines=True reader takes no filesystem: a URI's own is used
        return ray.data.read_json(files, lines=True, num_cpus=data_task_cpus())
    fs = filesystem(str(path))[0]
    files = [filesystem(f)[1] for f in files]
    # Ray 2.60's DataSourceV2 Parquet path (ListFiles -> ReadFiles) took ~20x longer to start
    # streaming a few-shard split than the V1 reader here; the choice is made at this call.
    ctx = DataContext.get_current()
    saved, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(files, filesystem=fs, num_cpus=data_task_cpus())
    finally:
        ctx.use_datasource_v2 = saved


def parse_dataset_spec(spec: str) -> list[tuple[str, float]]:
    """"A:0.9,B:0.1" -> [("A", 0.9), ("B", 0.1)]; a lone "A" means weight 1."""
    items = [item.strip() for item in spec.split(",")]
    if not spec.strip() or any(not item for item in items):
        raise UserError(f"--dataset {spec!r}: empty entry (expected PATH:WEIGHT,PATH:WEIGHT)")
    out: list[tuple[str, float]] = []
    for item in items:
        path, sep, weight_text = item.rpartition(":")
        if not sep or "/" in weight_text:  # no weight given (a ':' inside a path such as s3://)
            if len(items) > 1:
                raise UserError(f"--dataset {spec!r}: entry {item!r} has no weight (use PATH:WEIGHT)")
            return [(item, 1.0)]
        try:
            weight = float(weight_text)
        except ValueError:
            raise UserError(f"--dataset {spec!r}: weight {weight_text!r} of {path} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"--dataset {spec!r}: weight of {path} must be >= 0, got {weight_text}")
        out.append((path, weight))
    paths = [p for p, _ in out]
    dupes = sorted({p for p in paths if paths.count(p) > 1})
    if dupes:
        raise UserError(f"--dataset {spec!r}: {', '.join(dupes)} listed more than once")
    proportions([w for _, w in out], paths)
    return out


def mix_datasets(specs: list[tuple[str, float]], split: str, seed: int = 0,
                 num_samples: int | None = None, shuffle: str = "files") -> tuple[ray.data.Dataset, dict[str, Any]]:
    """Mix prepared datasets by weight into one stream with exact per-source quotas.

    num_samples None: the largest mixture that repeats no sample; otherwise that many, a source
    too small for its quota repeating samples (counted in info["sources"][i]["reused"]).
    shuffle "files" (default) reads each source's shards in a seeded random order and takes the
    first `quota` rows, so the stream never waits for a whole source: pair it with a local
    shuffle buffer when iterating (`local_shuffle_buffer_size`) to mix rows within batches.
    "full" is an exact global shuffle (an all-to-all that holds the data in the object store).
    """
    if shuffle not in SHUFFLES:
        raise UserError(f"shuffle must be one of {', '.join(SHUFFLES)}, got {shuffle!r}")
    if not specs:
        raise UserError("no datasets to mix")
    paths = [p for p, _ in specs]
    proportions([w for _, w in specs], paths)
    metas = [read_meta(p) for p in paths]
    check_same_tokenizer(metas)
    for path in paths:
        split_files(path, split)  # a clear error when a split is missing
    available = [m.samples(split) if m.samples(split) is not None else load_prepared_split(p, split).count()
                 for p, m in zip(paths, metas, strict=True)]
    plan = plan_mix(paths, [w for _, w in specs], available, num_samples)
    mixed: ray.data.Dataset | None = None
    for i, entry in enumerate(plan):
        if entry["quota"] == 0:
            continue
        passes = [_source_pass(entry["path"], split, i, shuffle, seed * 1009 + i * 97 + r)
                  for r in range(math.ceil(entry["quota"] / entry["available"]))]  # >1: reuse
        part = (passes[0].union(*passes[1:]) if len(passes) > 1 else passes[0]).limit(entry["quota"])
        mixed = part if mixed is None else mixed.union(part)
    if mixed is None:
        raise UserError(f"nothing to mix: 0 samples requested for split '{split}'")
    if shuffle == "full":
        mixed = mixed.random_shuffle(seed=seed)
    info = {"split": split, "seed": seed, "shuffle": shuffle, "total": sum(e["quota"] for e in plan),
            "sources": plan, "vocab_size": metas[0].vocab_size, "pad_id": metas[0].pad_id,
            "tokenizer_sha256": metas[0].tokenizer_sha256}
    return mixed, info


def _source_pass(path: str, split: str, index: int, shuffle: str, seed: int) -> ray.data.Dataset:
    """One pass over a source, tagged with its name and index, in the order `shuffle` asks."""
    ds = load_prepared_split(path, split, seed if shuffle == "files" else None)
    ds = ds.map_batches(tag_source, fn_kwargs={"name": path, "index": index}, batch_format="pyarrow",
                        batch_size=None, num_cpus=data_task_cpus())
    return ds.random_shuffle(seed=seed) if shuffle == "full" else ds


def _pad(rows: Any, pad_value: int, max_len: int | None, keep_end: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rows = [np.asarray(r) for r in rows]
    if max_len is not None:
        rows = [r[-max_len:] if keep_end else r[:max_len] for r in rows]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), pad_value, dtype=np.int64)
    mask = np.zeros(out.shape, dtype=bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return out, mask


def collate_triplets(batch: dict[str, np.ndarray], pad_id: int, max_seq_len: int | None = None) -> dict[str, torch.Tensor]:
    """Pad a batch of triplet rows to the LM batch format (per-batch longest row).

    With max_seq_len, the encoder keeps the last tokens (the question ends the prompt) and
    the decoder side its first tokens, labels cut in step with decoder_input_ids."""
    enc, enc_mask = _pad(batch["encoder_ids"], pad_id, max_seq_len, keep_end=True)
    dec, dec_mask = _pad(batch["decoder_input_ids"], pad_id, max_seq_len)
    labels, _ = _pad(batch["labels"], IGNORE_INDEX, max_seq_len)
    if labels.shape != dec.shape:
        raise ValueError(f"labels shape {labels.shape} differs from decoder_input_ids shape {dec.shape}")
    out = {
        "encoder_ids": torch.from_numpy(enc), "encoder_mask": torch.from_numpy(enc_mask),
        "decoder_input_ids": torch.from_numpy(dec), "labels": torch.from_numpy(labels),
        "decoder_mask": torch.from_numpy(dec_mask),
    }
    if "source_id" in batch:
        out["source_id"] = torch.as_tensor(np.asarray(batch["source_id"], dtype=np.int64))
    return out


class TripletCollate(NumpyBatchCollateFn):
    """Picklable `collate_fn` for `iter_torch_batches` bound to a pad id and length cap (a
    NumpyBatchCollateFn: Ray 2.47+ deprecates plain functions there)."""

    def __init__(self, pad_id: int, max_seq_len: int | None = None):
        super().__init__()
        self.pad_id, self.max_seq_len = pad_id, max_seq_len

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return collate_triplets(batch, self.pad_id, self.max_seq_len)
