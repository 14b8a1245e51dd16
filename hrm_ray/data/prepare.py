"""prepare_language_dataset: source files -> token triplets, as a Ray Data pipeline.

The files are cut into work units (whole files, runs of Parquet row groups, byte ranges of
large .jsonl files: `work_units`). An actor pool (`map_batches`, tokenizer built once per actor)
takes the units: read -> extract and clean documents -> tokenize -> triplets -> train/val by a
hash of the document id -> the unit's own Parquet shards (+ JSONL parts if asked). Workers
write their shards themselves, so the driver never touches the tokens; it adds up each unit's
counts (exact) and completes the layout: tokenizer.json, meta.json, empty splits, JSONL parts
joined in unit order. A unit's output depends only on its records, so a rerun with the same
inputs and seed gives byte-identical shards. Everything is written into a hidden temporary
directory renamed to --dest at the end.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from hrm_ray.data.meta import SPLITS, write_meta
from hrm_ray.data.ray_env import cluster_cpus, ensure_ray
from hrm_ray.data.ray_errors import user_errors_from_ray
from hrm_ray.data.records import find_files, iter_record_batches
from hrm_ray.data.sources import MODES, ExtractOptions, check_source_fields, extract_document, fields_read
from hrm_ray.data.split import is_val
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, load_tokenizer, save_tokenizer, train_tokenizer
from hrm_ray.data.triplets import TripletConfig, continuation_windows, prompt_response_windows, triplet_arrays
from hrm_ray.data.work_units import UNIT_BYTES, WorkUnit, piece_record_batches, plan_units
from hrm_ray.data.writer import DatasetWriter, atomic_dir, check_dest, finish_parts
from hrm_ray.errors import UserError

READ_BATCH = 1024


@dataclass
class PrepareConfig:
    source: list[str]
    dest: str
    tokenizer: str | None = None
    vocab_size: int = 32000
    max_seq_len: int = 512
    val_ratio: float = 0.01
    tokenizer_num_threads: int | None = None
    tokenizer_batch_size: int = 256
    tokenizer_workers: int | None = None
    tokenizer_sample_chars: int = 200_000_000
    max_files: int | None = None
    max_records: int | None = None
    text_field: str | None = None
    mode: str = "auto"
    encoder_len: int | None = None
    decoder_len: int | None = None
    format: str = "parquet"
    seed: int = 0
    language: str | None = None
    rows_per_shard: int = 100_000
    unit_bytes: int = UNIT_BYTES
    overwrite: bool = False
    address: str | None = None


@dataclass
class PrepareReport:
    dest: str
    files: int
    documents_read: int
    documents_used: int
    dropped: dict[str, int]
    truncated: int
    tokens: int
    samples: dict[str, int]
    vocab_size: int
    tokenizer_sha256: str
    tokenizer_trained: bool
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        lines = [
            f"prepared {self.dest}",
            f"  files {self.files}, documents read {self.documents_read}, used {self.documents_used}, "
            f"dropped {sum(self.dropped.values())} ({dropped})",
            f"  samples train {self.samples['train']}, val {self.samples['val']}; "
            f"tokens {self.tokens}; truncated samples {self.truncated}",
            f"  tokenizer {'trained' if self.tokenizer_trained else 'reused'}: vocab {self.vocab_size}, "
            f"sha256 {self.tokenizer_sha256[:16]}; {self.seconds:.1f}s",
        ]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])


class PrepareUnits:
    """Actor: tokenizer built once; for each work unit it reads the records, extracts documents,
    tokenizes, builds triplets, assigns splits and writes the unit's own shards into the staging
    directory. It returns one small row of counts per unit: the driver only adds them up."""

    def __init__(self, tokenizer_json: str, tcfg: TripletConfig, cfg: PrepareConfig, opts: ExtractOptions,
                 staging: str, num_threads: int):
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if num_threads > 1 else "false"
        os.environ["RAYON_NUM_THREADS"] = str(num_threads)
        from tokenizers import Tokenizer

        self.staging = Path(staging)
        if not self.staging.is_dir():
            raise UserError(f"--dest {cfg.dest}: its staging directory {staging} is not visible on worker node "
                            f"{socket.gethostname()}; on a multi-node cluster --dest must be on a shared filesystem")
        self.tok = Tokenizer.from_str(tokenizer_json)
        self.tcfg, self.cfg, self.opts = tcfg, cfg, opts
        self.fields = fields_read(opts)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        return pa.Table.from_pylist([self.prepare(WorkUnit.from_json(u)) for u in batch["unit"]])

    def prepare(self, unit: WorkUnit) -> dict[str, Any]:
        counts: Counter = Counter()
        writer = DatasetWriter(self.staging, self.cfg.format, rows_per_shard=self.cfg.rows_per_shard, part=unit.index)
        limit = self.cfg.max_records
        for piece in unit.pieces:
            record = piece.first_record
            for records in piece_record_batches(piece, self.cfg.tokenizer_batch_size, self.fields):
                if limit is not None:
                    records = records[: max(0, limit - record)]
                if not records:
                    break
                docs = [extract_document(r, f"{piece.prefix}:{record + i}", self.opts) for i, r in enumerate(records)]
                record += len(records)
                counts["documents"] += len(docs)
                self.write_documents(docs, writer, counts)
        writer.close()
        dropped = {k[len("dropped:"):]: v for k, v in counts.items() if k.startswith("dropped:") and v}
        return {"unit": unit.index, "documents": counts["documents"], "tokens": counts["tokens"],
                "truncated": counts["truncated"], "dropped": json.dumps(dropped), "shards": json.dumps(writer.files()),
                **{f"rows_{split}": n for split, n in writer.counts().items()}}

    def write_documents(self, docs: list[dict[str, Any]], writer: DatasetWriter, counts: Counter) -> None:
        """Tokenize the usable documents in one call and turn them into triplets with array
        operations (no Python loop over tokens or samples); samples keep document order."""
        strings: list[str] = []
        text_doc, text_str, pair_doc, pair_str, val = [], [], [], [], []
        for doc in docs:
            if doc["status"] != "ok":
                counts[f"dropped:{doc['status']}"] += 1
                continue
            position = len(val)
            val.append(is_val(doc["doc_id"], self.cfg.val_ratio, self.cfg.seed))
            if doc["kind"] == "text":
                text_doc.append(position)
                text_str.append(len(strings))
                strings.append(doc["text"])
            else:
                pair_doc.append(position)
                pair_str.append(len(strings))
                strings.extend((doc["prompt"], doc["response"]))
        if not strings:
            return
        ids = [e.ids for e in self.tok.encode_batch_fast(strings, add_special_tokens=False)]
        lengths = np.fromiter(map(len, ids), np.int64, len(ids))
        starts = np.cumsum(lengths) - lengths
        values = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(lengths.sum()))
        counts["tokens"] += int(lengths.sum())

        t_str, p_str = np.array(text_str, np.int64), np.array(pair_str, np.int64)
        cont = continuation_windows(self.tcfg, starts[t_str], lengths[t_str])
        counts["dropped:too_short"] += int((np.bincount(cont["doc"], minlength=len(t_str)) == 0).sum())
        pairs = prompt_response_windows(self.tcfg, starts[p_str], lengths[p_str], starts[p_str + 1],
                                        lengths[p_str + 1])
        counts["truncated"] += int(pairs["truncated"].sum())

        doc_of = np.concatenate([np.array(text_doc, np.int64)[cont["doc"]], np.array(pair_doc, np.int64)])
        order = np.argsort(doc_of, kind="stable")
        window = {k: np.concatenate([cont[k], pairs[k]])[order] for k in ("enc_start", "enc_len", "tgt_start", "tgt_len")}
        in_val = np.array(val, bool)[doc_of[order]]
        for split, mask in (("train", ~in_val), ("val", in_val)):
            if mask.any():
                writer.write(split, pa.table(triplet_arrays(self.tcfg, values, **{k: v[mask] for k, v in window.items()})))


def tokenizer_sample(files: list[tuple[Path, str]], opts: ExtractOptions, max_chars: int,
                     max_records: int | None):
    """Texts to train the tokenizer on: each file contributes up to an equal share of
    `max_chars`, in file order (deterministic)."""
    share = max(1, max_chars // len(files))
    for path, prefix in files:
        used, row = 0, 0
        for records in iter_record_batches(path, READ_BATCH):
            for record in records:
                if max_records is not None and row >= max_records:
                    break
                doc = extract_document(record, f"{prefix}:{row}", opts)
                row += 1
                if doc["status"] != "ok":
                    continue
                for text in ([doc["text"]] if doc["kind"] == "text" else [doc["prompt"], doc["response"]]):
                    used += len(text)
                    yield text
                if used >= share:
                    break
            if used >= share or (max_records is not None and row >= max_records):
                break


def build_pipeline(units: list[WorkUnit], opts: ExtractOptions, tokenizer_json: str, tcfg: TripletConfig,
                   cfg: PrepareConfig, staging: Path) -> ray.data.Dataset:
    threads = cfg.tokenizer_num_threads or 1
    workers = cfg.tokenizer_workers or max(1, int(cluster_cpus() // threads))
    ds = ray.data.from_items([{"unit": u.to_json()} for u in units], override_num_blocks=len(units))
    return ds.map_batches(
        PrepareUnits, fn_constructor_args=(tokenizer_json, tcfg, cfg, opts, str(staging), threads),
        batch_size=1, batch_format="numpy", num_cpus=threads,
        compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(units)))),
    )


def _validate(cfg: PrepareConfig) -> None:
    if cfg.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if not 0 <= cfg.val_ratio < 1:
        raise UserError(f"--val-ratio must be in [0, 1), got {cfg.val_ratio}")
    if cfg.tokenizer_batch_size < 1:
        raise UserError(f"--tokenizer-batch-size must be >= 1, got {cfg.tokenizer_batch_size}")
    if cfg.max_files is not None and cfg.max_files < 1:
        raise UserError(f"--max-files must be >= 1, got {cfg.max_files}")


def prepare_language_dataset(cfg: PrepareConfig) -> PrepareReport:
    start = time.perf_counter()
    _validate(cfg)
    check_dest(cfg.dest, cfg.overwrite)
    files = find_files(cfg.source, cfg.max_files)
    opts = ExtractOptions(mode=cfg.mode, text_field=cfg.text_field, language=cfg.language)
    for path, _ in files:
        first = next(iter_record_batches(path, 1), None)
        if first:
            check_source_fields(first[0], str(path), opts)
    notes: list[str] = []
    if cfg.tokenizer:
        tok = load_tokenizer(cfg.tokenizer)
        if cfg.vocab_size != tok.get_vocab_size():
            notes.append(f"--tokenizer given: its vocab size {tok.get_vocab_size()} is used")
    else:
        tok = train_tokenizer(tokenizer_sample(files, opts, cfg.tokenizer_sample_chars, cfg.max_records),
                              cfg.vocab_size, cfg.tokenizer_num_threads)
    tcfg = TripletConfig.build(cfg.max_seq_len, cfg.encoder_len, cfg.decoder_len, BOS_ID, EOS_ID)

    units = plan_units(files, cfg.unit_bytes, cfg.max_records)
    ensure_ray(cfg.address)
    with atomic_dir(cfg.dest, cfg.overwrite) as tmp, user_errors_from_ray():
        sha = save_tokenizer(tok, tmp / "tokenizer.json")
        rows = sorted(build_pipeline(units, opts, tok.to_str(), tcfg, cfg, tmp).take_all(), key=lambda r: r["unit"])
        dropped: Counter = Counter()
        shards: dict[str, list[str]] = {split: [] for split in SPLITS}
        for row in rows:
            dropped.update(json.loads(row["dropped"]))
            for split, names in json.loads(row["shards"]).items():
                shards[split].extend(names)
        files_by_split = finish_parts(tmp, cfg.format, shards, len(units))
        samples = {split: sum(int(r[f"rows_{split}"]) for r in rows) for split in SPLITS}
        docs = sum(int(r["documents"]) for r in rows)
        if cfg.val_ratio > 0 and samples["val"] == 0:
            notes.append("val split is empty: raise --val-ratio or add documents")
        report = PrepareReport(
            dest=str(cfg.dest), files=len(files), documents_read=docs,
            documents_used=docs - sum(dropped.values()), dropped=dict(dropped),
            truncated=sum(int(r["truncated"]) for r in rows), tokens=sum(int(r["tokens"]) for r in rows),
            samples=samples, vocab_size=tok.get_vocab_size(), tokenizer_sha256=sha,
            tokenizer_trained=cfg.tokenizer is None, seconds=0.0, notes=notes)
        write_meta(tmp, {
            "vocab_size": tok.get_vocab_size(), "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
            "unk_id": tok.token_to_id("<unk>"), "max_seq_len": cfg.max_seq_len,
            "train_samples": samples["train"], "val_samples": samples["val"], "tokenizer_sha256": sha,
            "mode": cfg.mode, "encoder_len": tcfg.encoder_len, "decoder_len": tcfg.decoder_len,
            "val_ratio": cfg.val_ratio, "seed": cfg.seed, "format": cfg.format,
            "sources": [str(s) for s in cfg.source], "files": len(files), "shards": files_by_split,
            "counts": {k: v for k, v in asdict(report).items()
                       if k in ("documents_read", "documents_used", "dropped", "truncated", "tokens")},
            "created_by": "hrm-ray data prepare",
        })
    report.seconds = time.perf_counter() - start
    return report
