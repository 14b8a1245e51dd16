"""Mix mode: sources x weights -> one prepared dataset with exact per-source quotas.

Each split gets `largest_remainder` quotas of the requested size; each source is sampled
without replacement (a seeded permutation) until exhausted, then reused (counted); the picks
of all sources are shuffled together with the seed and written with a `source` column.
meta.json records weights, quotas and realised counts.

Rows are fetched by index from memory-mapped Arrow copies of the sources (in a scratch dir
inside the temporary output), so memory stays bounded by the output chunk, not the sources,
and the result is exact and deterministic. (Training mixes on the fly instead: `hrm_ray.train.mixture_feed`
interleaves the sources by weight into every batch; validation streams `ingest.mix_datasets`.)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from hrm_ray.data.jsonl_io import iter_split_tables
from hrm_ray.data.meta import (
    SPLITS,
    TRIPLET_COLUMNS,
    check_same_tokenizer,
    read_meta,
    split_files,
    write_meta,
)
from hrm_ray.data.quotas import plan_mix, proportions
from hrm_ray.data.writer import MIX_SCHEMA, TRIPLET_SCHEMA, DatasetWriter, atomic_dir, check_dest
from hrm_ray.errors import UserError
from hrm_ray.storage import join, read_bytes

CHUNK_ROWS = 50_000
REPEAT_WARNING = 4  # a source whose rows are used more often than this gets a warning line


@dataclass
class MixReport:
    output: str
    splits: dict[str, dict[str, Any]]

    def summary(self) -> str:
        lines = [f"mixed into {self.output}"]
        for split, info in self.splits.items():
            lines.append(f"  {split}: {info['total']} samples")
            for src in info["sources"]:
                lines.append(f"    {src['path']}: weight {src['weight']:g} -> {src['realised']} "
                             f"({src['realised_share']:.4f}) of {src['available']} available{repeats(src)}")
            lines += [f"  warning: {split}: {src['path']}: each of its {src['available']} rows is used "
                      f"{src['quota'] / src['available']:,.1f} times: a model will memorise it (add data or lower "
                      "its weight)" for src in info["sources"]
                      if src["available"] and src["quota"] > REPEAT_WARNING * src["available"]]
        return "\n".join(lines)


def repeats(src: dict[str, Any]) -> str:
    """How often a source's rows are used when its quota exceeds them (each row floor or ceil of the ratio)."""
    if not src["reused"] or not src["available"]:
        return ""
    low, high = src["quota"] // src["available"], -(-src["quota"] // src["available"])
    times = f"{low:,}" if low == high else f"{low:,}-{high:,}"
    return f", reused {src['reused']} (each row used {times} times, {src['quota'] / src['available']:,.1f} on average)"


def _arrow_copy(source: str, split: str, scratch: Path) -> pa.Table:
    """The split's triplet columns as a memory-mapped Arrow file (zero-copy table)."""
    path = scratch / f"{len(list(scratch.iterdir()))}.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, TRIPLET_SCHEMA) as writer:
        for table in iter_split_tables(source, split):
            writer.write_table(table.select(list(TRIPLET_COLUMNS)).cast(TRIPLET_SCHEMA))
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def pick_indices(available: int, quota: int, rng: np.random.Generator) -> np.ndarray:
    """`quota` row indices: a permutation of all rows, then fresh permutations for reuse."""
    rounds = -(-quota // available) if quota else 0
    return np.concatenate([rng.permutation(available) for _ in range(rounds)] or [np.empty(0, np.int64)])[:quota]


def mix_split(sources: list[str], weights: list[float], split: str, num_samples: int | None, seed: int,
              writer: DatasetWriter, scratch: Path) -> dict[str, Any]:
    metas = [read_meta(s) for s in sources]
    available = [m.samples(split) for m in metas]
    for source, n in zip(sources, available, strict=True):
        split_files(source, split)  # a clear error when the split is missing
        if n is None:
            raise UserError(f"{source}: meta.json has no {split}_samples")
    plan = plan_mix(sources, weights, available, num_samples)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    picks = [pick_indices(e["available"], e["quota"], rng) for e in plan]
    order_src = np.concatenate([np.full(len(p), i, np.int32) for i, p in enumerate(picks)])
    order_idx = np.concatenate(picks)
    shuffle = rng.permutation(len(order_idx))
    order_src, order_idx = order_src[shuffle], order_idx[shuffle]
    tables = {i: _arrow_copy(sources[i], split, scratch) for i, e in enumerate(plan) if e["quota"]}
    names = pa.array(sources, pa.string())
    for start in range(0, len(order_idx), CHUNK_ROWS):
        src, idx = order_src[start:start + CHUNK_ROWS], order_idx[start:start + CHUNK_ROWS]
        parts, positions = [], []
        for i, table in tables.items():
            where = np.flatnonzero(src == i)
            parts.append(table.take(pa.array(idx[where])).combine_chunks())
            positions.append(where)
        chunk = pa.concat_tables(parts).take(pa.array(np.argsort(np.concatenate(positions), kind="stable")))
        writer.write(split, chunk.append_column("source", names.take(pa.array(src))))
    realised = np.bincount(order_src, minlength=len(sources))
    for entry, count in zip(plan, realised, strict=True):
        entry["realised"] = int(count)
        entry["realised_share"] = int(count) / max(1, len(order_idx))
    return {"split": split, "total": int(len(order_idx)), "seed": seed, "sources": plan}


def mix_prepared(sources: list[str], weights: list[float], output: str, train_samples: int | None = None,
                 val_samples: int | None = None, seed: int = 0, overwrite: bool = False,
                 address: str | None = None) -> MixReport:
    """`address` is accepted for symmetry with the Ray jobs; mixing by index needs no cluster."""
    proportions(weights, sources)
    for name, n in (("--train-samples", train_samples), ("--val-samples", val_samples)):
        if n is not None and n < 0:
            raise UserError(f"{name} must be >= 0, got {n}")
    check_dest(output, overwrite)
    metas = [read_meta(s) for s in sources]
    check_same_tokenizer(metas)
    splits: dict[str, dict[str, Any]] = {}
    with atomic_dir(output, overwrite) as tmp:
        scratch = tmp / ".scratch"
        scratch.mkdir()
        writer = DatasetWriter(tmp, "parquet", schema=MIX_SCHEMA)
        for split, n in zip(SPLITS, (train_samples, val_samples), strict=True):
            splits[split] = mix_split(sources, weights, split, n, seed, writer, scratch)
        writer.close()
        shutil.rmtree(scratch)
        (tmp / "tokenizer.json").write_bytes(read_bytes(join(sources[0], "tokenizer.json")))
        counts, first = writer.counts(), metas[0]
        write_meta(tmp, {
            "vocab_size": first.vocab_size, "pad_id": first.pad_id, "bos_id": first.bos_id,
            "eos_id": first.eos_id, "max_seq_len": max((m.max_seq_len or 0) for m in metas) or None,
            "train_samples": counts["train"], "val_samples": counts["val"],
            "tokenizer_sha256": first.tokenizer_sha256, "seed": seed, "format": "parquet",
            "sources": [{"path": s, "weight": w} for s, w in zip(sources, weights, strict=True)],
            "mix": {split: info["sources"] for split, info in splits.items()},
            "shards": writer.files(), "created_by": "hrm-ray data mix",
        })
    return MixReport(output, splits)
