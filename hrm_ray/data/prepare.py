"""prepare_language_dataset: source files -> token triplets, as a Ray Data pipeline.

read files (tasks) -> extract and clean documents -> tokenize and build triplets in an
actor pool (`map_batches`, tokenizer built once per actor) -> train/val by a hash of the
document id -> Parquet shards per split (+ JSONL if asked), tokenizer.json, meta.json.

The driver consumes the stream in order (`preserve_order`) and writes the shards, so the
counts are exact and a rerun with the same inputs and seed gives byte-identical shards.
Everything is written into a hidden temporary directory renamed to --dest at the end.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data import DataContext

from hrm_ray.data.meta import SPLITS, write_meta
from hrm_ray.data.ray_env import cluster_cpus, ensure_ray
from hrm_ray.data.ray_errors import user_errors_from_ray
from hrm_ray.data.records import find_files, iter_record_batches
from hrm_ray.data.sources import MODES, ExtractOptions, check_source_fields, extract_document
from hrm_ray.data.split import split_of
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, load_tokenizer, save_tokenizer, train_tokenizer
from hrm_ray.data.triplets import TripletConfig, continuation_triplets, prompt_response_triplet
from hrm_ray.data.writer import TOKENS, DatasetWriter, atomic_dir, check_dest
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


def read_documents(batch: dict[str, Any], opts: ExtractOptions, max_records: int | None):
    """Ray Data task: a batch of file paths -> documents (streams each file in chunks)."""
    for path, prefix in zip(batch["path"], batch["prefix"], strict=True):
        row = 0
        for records in iter_record_batches(path, READ_BATCH):
            if max_records is not None:
                records = records[: max(0, max_records - row)]
            if not records:
                break
            docs = [extract_document(r, f"{prefix}:{row + i}", opts) for i, r in enumerate(records)]
            row += len(records)
            yield pa.Table.from_pylist(docs)


class TokenizeTriplets:
    """Actor: tokenizer built once; a batch of documents -> triplet rows (one row per sample,
    plus one empty row per dropped document so the driver can count drops exactly)."""

    def __init__(self, tokenizer_json: str, tcfg: TripletConfig, val_ratio: float, seed: int,
                 num_threads: int):
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if num_threads > 1 else "false"
        os.environ["RAYON_NUM_THREADS"] = str(num_threads)
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(tokenizer_json)
        self.tcfg, self.val_ratio, self.seed = tcfg, val_ratio, seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        cols = batch.to_pydict()
        strings: list[str] = []
        for kind, status, text, prompt, response in zip(cols["kind"], cols["status"], cols["text"],
                                                        cols["prompt"], cols["response"], strict=True):
            if status == "ok":
                strings.extend([text] if kind == "text" else [prompt, response])
        encoded = iter(self.tok.encode_batch_fast(strings, add_special_tokens=False))
        out: dict[str, list] = {k: [] for k in ("encoder_ids", "decoder_input_ids", "labels", "split",
                                                "status", "doc_start", "truncated", "n_tokens")}

        def emit(triplet, split, status, first, truncated, n_tokens):
            out["encoder_ids"].append(triplet[0])
            out["decoder_input_ids"].append(triplet[1])
            out["labels"].append(triplet[2])
            out["split"].append(split)
            out["status"].append(status)
            out["doc_start"].append(first)
            out["truncated"].append(truncated)
            out["n_tokens"].append(n_tokens)

        empty = ([], [], [])
        for doc_id, kind, status in zip(cols["doc_id"], cols["kind"], cols["status"], strict=True):
            if status != "ok":
                emit(empty, "", status, True, False, 0)
                continue
            split = split_of(doc_id, self.val_ratio, self.seed)
            if kind == "text":
                ids = next(encoded).ids
                triplets = continuation_triplets(self.tcfg, ids)
                if not triplets:
                    emit(empty, "", "too_short", True, False, len(ids))
                for i, triplet in enumerate(triplets):
                    emit(triplet, split, "ok", i == 0, False, len(ids) if i == 0 else 0)
            else:
                prompt_ids, response_ids = next(encoded).ids, next(encoded).ids
                triplet, truncated = prompt_response_triplet(self.tcfg, prompt_ids, response_ids)
                emit(triplet, split, "ok", True, truncated, len(prompt_ids) + len(response_ids))
        return pa.table({
            "encoder_ids": pa.array(out["encoder_ids"], TOKENS),
            "decoder_input_ids": pa.array(out["decoder_input_ids"], TOKENS),
            "labels": pa.array(out["labels"], TOKENS),
            "split": pa.array(out["split"], pa.string()),
            "status": pa.array(out["status"], pa.string()),
            "doc_start": pa.array(out["doc_start"], pa.bool_()),
            "truncated": pa.array(out["truncated"], pa.bool_()),
            "n_tokens": pa.array(out["n_tokens"], pa.int64()),
        })


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


def build_pipeline(files: list[tuple[Path, str]], opts: ExtractOptions, tokenizer_json: str,
                   tcfg: TripletConfig, cfg: PrepareConfig) -> ray.data.Dataset:
    threads = cfg.tokenizer_num_threads or 1
    workers = cfg.tokenizer_workers or max(1, int(cluster_cpus() // threads))
    ds = ray.data.from_items([{"path": str(p), "prefix": prefix} for p, prefix in files],
                             override_num_blocks=len(files))
    ds = ds.map_batches(read_documents, fn_kwargs={"opts": opts, "max_records": cfg.max_records},
                        batch_size=1, num_cpus=0.25)
    return ds.map_batches(
        TokenizeTriplets,
        fn_constructor_args=(tokenizer_json, tcfg, cfg.val_ratio, cfg.seed, threads),
        batch_size=cfg.tokenizer_batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0.75 * threads,
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

    ensure_ray(cfg.address)
    ctx = DataContext.get_current()
    saved_order = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    docs, tokens, truncated, dropped = 0, 0, 0, Counter()
    try:
        with atomic_dir(cfg.dest, cfg.overwrite) as tmp, user_errors_from_ray():
            sha = save_tokenizer(tok, tmp / "tokenizer.json")
            writer = DatasetWriter(tmp, cfg.format, rows_per_shard=cfg.rows_per_shard)
            ds = build_pipeline(files, opts, tok.to_str(), tcfg, cfg)
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                docs += pc.sum(block["doc_start"]).as_py() or 0
                tokens += pc.sum(block["n_tokens"]).as_py() or 0
                truncated += pc.sum(block["truncated"]).as_py() or 0
                ok = pc.equal(block["status"], "ok")
                for item in pc.value_counts(pc.filter(block["status"], pc.invert(ok))).to_pylist():
                    dropped[item["values"]] += item["counts"]
                for split in SPLITS:
                    writer.write(split, block.filter(pc.and_(ok, pc.equal(block["split"], split))))
            writer.close()
            samples = writer.counts()
            if cfg.val_ratio > 0 and samples["val"] == 0:
                notes.append("val split is empty: raise --val-ratio or add documents")
            report = PrepareReport(
                dest=str(cfg.dest), files=len(files), documents_read=docs,
                documents_used=docs - sum(dropped.values()), dropped=dict(dropped), truncated=truncated,
                tokens=tokens, samples=samples, vocab_size=tok.get_vocab_size(), tokenizer_sha256=sha,
                tokenizer_trained=cfg.tokenizer is None, seconds=0.0, notes=notes)
            write_meta(tmp, {
                "vocab_size": tok.get_vocab_size(), "pad_id": PAD_ID, "bos_id": BOS_ID, "eos_id": EOS_ID,
                "unk_id": tok.token_to_id("<unk>"), "max_seq_len": cfg.max_seq_len,
                "train_samples": samples["train"], "val_samples": samples["val"], "tokenizer_sha256": sha,
                "mode": cfg.mode, "encoder_len": tcfg.encoder_len, "decoder_len": tcfg.decoder_len,
                "val_ratio": cfg.val_ratio, "seed": cfg.seed, "format": cfg.format,
                "sources": [str(s) for s in cfg.source], "files": len(files), "shards": writer.files(),
                "counts": {k: v for k, v in asdict(report).items()
                           if k in ("documents_read", "documents_used", "dropped", "truncated", "tokens")},
                "created_by": "hrm-ray data prepare",
            })
    finally:
        ctx.execution_options.preserve_order = saved_order
    report.seconds = time.perf_counter() - start
    return report
