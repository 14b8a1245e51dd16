"""prepare_language_dataset: source files -> token triplets, as a Ray Data pipeline.

The files are cut into work units (whole files, runs of Parquet row groups, byte ranges of
large .jsonl files: `work_units`). An actor pool (`map_batches`, tokenizer built once per actor)
takes the units: read -> extract and clean documents -> tokenize -> triplets -> train/val by a
hash of the document id -> the unit's own Parquet shards (+ JSONL parts if asked). Workers
write their shards themselves, so the driver never touches the tokens; it adds up each unit's
counts (exact) and completes the layout: tokenizer.json, meta.json, empty splits, JSONL parts
joined in unit order. A unit's output depends only on its records, so a rerun with the same
inputs and seed gives byte-identical shards. Everything is written into a hidden temporary
directory renamed to --dest at the end; a failed or interrupted job deletes it (its actors find
it gone at their next batch and stop, and cannot bring it back: see `writer`). An s3://, gs://
--dest has no rename: each actor, on whichever node, uploads its units' shards into the --dest prefix
itself, and the driver writes meta.json last (readers refuse a prefix without it); a failed job removes
what it wrote (best effort) and never writes meta.json. No node needs a shared filesystem for it.

`--max-records N` applies while reading, in record order: nothing after a file's first N records
is read or parsed. A --source that yields no usable document, or a job that yields no training
sample, is an error, never a dataset with nothing to train on.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from hrm_ray.data.meta import SPLITS, write_meta
from hrm_ray.data.records import find_files, iter_record_batches
from hrm_ray.data.sources import MODES, ExtractOptions, check_source_fields, extract_document, fields_read
from hrm_ray.data.split import is_val
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, load_tokenizer, save_tokenizer, train_tokenizer
from hrm_ray.data.triplets import TripletConfig, continuation_windows, prompt_response_windows, triplet_arrays
from hrm_ray.data.work_units import UNIT_BYTES, Piece, WorkUnit, piece_record_batches, plan_units
from hrm_ray.data.writer import (
    DatasetWriter,
    atomic_dir,
    check_dest,
    finish_parts,
    finish_remote_parts,
    remote_dataset,
    upload_part,
)
from hrm_ray.errors import UserError
from hrm_ray.ray_env import actor_threads, cluster_cpus, ensure_ray, node_cpus
from hrm_ray.ray_errors import user_errors_from_ray
from hrm_ray.storage import (
    adopt_store_env,
    is_dir,
    is_file,
    is_remote,
    join,
    localize,
    store_env,
    write_bytes,
)

READ_BATCH = 1024
POSITIVE_FLAGS = ("tokenizer_batch_size", "max_files", "max_records", "rows_per_shard", "tokenizer_workers",
                  "tokenizer_num_threads", "tokenizer_sample_chars")


class StagingRemoved(RuntimeError):
    """The job's staging directory is gone: the driver failed or was interrupted and cleaned up."""


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
                 staging: str, num_threads: int, driver_node: str = "", env: dict[str, str] | None = None):
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if num_threads > 1 else "false"
        os.environ["RAYON_NUM_THREADS"] = str(num_threads)
        adopt_store_env(env or {})
        from tokenizers import Tokenizer

        self.remote = is_remote(staging)
        self.staging = staging if self.remote else Path(staging)
        if self.remote:
            self.check_staging()
        elif not self.staging.is_dir():
            if ray.get_runtime_context().get_node_id() == driver_node:  # the driver removed it: it stopped
                raise StagingRemoved(f"{staging} was removed: the job failed or was interrupted")
            raise UserError(f"--dest {cfg.dest}: its staging directory {staging} is not visible on worker node "
                            f"{socket.gethostname()}; on a multi-node cluster a local --dest must be on a shared "
                            f"filesystem (or prepare into a bucket: --dest s3://...)")
        self.tok = Tokenizer.from_str(tokenizer_json)
        self.tcfg, self.cfg, self.opts = tcfg, cfg, opts
        self.fields = fields_read(opts)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        return pa.Table.from_pylist([self.prepare(WorkUnit.from_json(u)) for u in batch["unit"]])

    def check_staging(self) -> None:
        """Stop when the driver has removed the staging directory (for a store: its tokenizer.json, written
        first and removed with the rest) because the job failed."""
        present = is_file(join(self.staging, "tokenizer.json")) if self.remote else self.staging.is_dir()
        if not present:
            raise StagingRemoved(f"{self.staging} was removed: the job failed or was interrupted")

    def prepare(self, unit: WorkUnit) -> dict[str, Any]:
        if not self.remote:
            return self.prepare_into(unit, self.staging)
        with tempfile.TemporaryDirectory(prefix="hrm-ray-unit-") as local:  # one unit's files, then uploaded
            row = self.prepare_into(unit, Path(local))
            self.check_staging()
            upload_part(Path(local), self.staging)
        return row

    def prepare_into(self, unit: WorkUnit, root: Path) -> dict[str, Any]:
        writer = DatasetWriter(root, self.cfg.format, rows_per_shard=self.cfg.rows_per_shard, part=unit.index)
        by_file: dict[str, Counter] = {}
        for piece in unit.pieces:
            self.prepare_piece(piece, writer, by_file.setdefault(piece.path, Counter()))
        writer.close()
        counts: Counter = sum(by_file.values(), Counter())
        return {"unit": unit.index, "node": ray.get_runtime_context().get_node_id(), "documents": counts["documents"], "tokens": counts["tokens"],
                "truncated": counts["truncated"], "dropped": json.dumps(dropped_of(counts)),
                "files": json.dumps({path: dict(c) for path, c in by_file.items()}),
                "shards": json.dumps(writer.files()), **{f"rows_{split}": n for split, n in writer.counts().items()}}

    def prepare_piece(self, piece: Piece, writer: DatasetWriter, counts: Counter) -> None:
        limit = None if self.cfg.max_records is None else max(0, self.cfg.max_records - piece.first_record)
        record = piece.first_record
        for records in piece_record_batches(piece, self.cfg.tokenizer_batch_size, self.fields, limit):
            self.check_staging()
            docs = [extract_document(r, f"{piece.prefix}:{record + i}", self.opts) for i, r in enumerate(records)]
            record += len(records)
            counts["documents"] += len(docs)
            self.write_documents(docs, writer, counts)

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
        for records in iter_record_batches(path, READ_BATCH, max_records):
            for record in records:
                doc = extract_document(record, f"{prefix}:{row}", opts)
                row += 1
                if doc["status"] != "ok":
                    continue
                for text in ([doc["text"]] if doc["kind"] == "text" else [doc["prompt"], doc["response"]]):
                    used += len(text)
                    yield text
                if used >= share:
                    break
            if used >= share:
                break


def build_pipeline(units: list[WorkUnit], opts: ExtractOptions, tokenizer_json: str, tcfg: TripletConfig,
                   cfg: PrepareConfig, staging: Path | str) -> ray.data.Dataset:
    nodes = node_cpus()
    threads, note = actor_threads(cfg.tokenizer_num_threads or 1, nodes, "--tokenizer-num-threads")
    if note:
        print(note, flush=True)
    cpus = min(float(threads), max(nodes, default=1.0))  # a node of 0.5 CPUs still runs one actor
    workers = cfg.tokenizer_workers or max(1, int(cluster_cpus() // threads))
    ds = ray.data.from_items([{"unit": u.to_json()} for u in units], override_num_blocks=len(units))
    return ds.map_batches(
        PrepareUnits, fn_constructor_args=(tokenizer_json, tcfg, cfg, opts, str(staging), threads,
                                           ray.get_runtime_context().get_node_id(), store_env()),
        batch_size=1, batch_format="numpy", num_cpus=cpus,
        compute=ray.data.ActorPoolStrategy(size=max(1, min(workers, len(units)))),
    )


def run_pipeline(ds: ray.data.Dataset, ours: bool) -> list[dict[str, Any]]:
    """The pipeline's rows. On Ctrl-C, a Ray this job started or connected to is shut down before the staging
    directory goes: its actors end with it and none of their failures (the staging they write to removed under
    them) is streamed to the console after the job's one line."""
    try:
        return ds.take_all()
    except KeyboardInterrupt:
        if ours:
            ray.shutdown()
        raise


def dropped_of(counts: Counter) -> dict[str, int]:
    return {k[len("dropped:"):]: v for k, v in counts.items() if k.startswith("dropped:") and v}


def _validate(cfg: PrepareConfig) -> TripletConfig:
    """Check every value before any work starts; returns the triplet layout."""
    if cfg.mode not in MODES:
        raise UserError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if not 0 <= cfg.val_ratio < 1:
        raise UserError(f"--val-ratio must be in [0, 1), got {cfg.val_ratio}")
    for name in POSITIVE_FLAGS:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if cfg.unit_bytes < 1:
        raise UserError(f"unit_bytes must be >= 1, got {cfg.unit_bytes}")
    return TripletConfig.build(cfg.max_seq_len, cfg.encoder_len, cfg.decoder_len, BOS_ID, EOS_ID)


def source_of(path: str | Path, sources: list[str]) -> str:
    """The --source argument a found file came from."""
    path = Path(path)
    return next((s for s in sources if path == Path(s) or Path(s) in path.parents), str(path))


def _check_files(files: list[tuple[Path, str]], sources: list[str], opts: ExtractOptions) -> None:
    """Before any work: each file's first record has a field the mode can use, and every --source
    has a record at all."""
    paths_of: dict[str, list[Path]] = {}
    with_records: set[Path] = set()
    for path, _ in files:
        paths_of.setdefault(source_of(path, sources), []).append(path)
        first = next(iter_record_batches(path, 1, limit=1), None)
        if first:
            check_source_fields(first[0], str(path), opts)
            with_records.add(path)
    for source, paths in paths_of.items():
        if with_records.isdisjoint(paths):
            what = f"{paths[0]} has no records" if len(paths) == 1 else f"none of its {len(paths)} files has a record"
            raise UserError(f"--source {source}: {what}")


def _check_usable(rows: list[dict[str, Any]], sources: list[str], samples: dict[str, int], val_ratio: float) -> None:
    """Every --source gave at least one usable document, and the train split is not empty."""
    by_source: dict[str, Counter] = {}
    for row in rows:
        for path, counts in json.loads(row["files"]).items():
            by_source.setdefault(source_of(path, sources), Counter()).update(counts)
    for source, counts in by_source.items():
        dropped = dropped_of(counts)
        if counts["documents"] <= sum(dropped.values()):
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items()))
            raise UserError(f"--source {source}: no usable document: all {counts['documents']} records read were "
                            f"dropped ({reasons or 'no records'}); check --mode, --text-field, --language")
    if samples["train"] == 0:
        raise UserError(f"--source {' '.join(sources)}: no training sample: all {samples['val']} samples fell in "
                        f"the val split (--val-ratio {val_ratio}); lower --val-ratio or add documents")


def _tokenizer(cfg: PrepareConfig, files: list[tuple[Path, str]], opts: ExtractOptions, notes: list[str]):
    if cfg.tokenizer:
        tok = load_tokenizer(_local_tokenizer(cfg.tokenizer))
        if cfg.vocab_size != tok.get_vocab_size():
            notes.append(f"--tokenizer given: its vocab size {tok.get_vocab_size()} is used")
        return tok
    return train_tokenizer(tokenizer_sample(files, opts, cfg.tokenizer_sample_chars, cfg.max_records),
                           cfg.vocab_size, cfg.tokenizer_num_threads)


def _local_tokenizer(path: str) -> Path:
    """--tokenizer as a local path: a URI's tokenizer.json (of a file, or of a dataset's directory) is copied."""
    if is_remote(path) and is_dir(path):
        path = join(path, "tokenizer.json")
    return localize(path)


def _shards(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    shards: dict[str, list[str]] = {split: [] for split in SPLITS}
    for row in rows:
        for split, names in json.loads(row["shards"]).items():
            shards[split].extend(names)
    return shards


def staging_for(cfg: PrepareConfig):
    """Where the job writes: a hidden local directory renamed to --dest, or for a store the --dest prefix
    itself (`remote_dataset`: meta.json, written last, marks it complete)."""
    if is_remote(cfg.dest):
        return remote_dataset(cfg.dest.rstrip("/"), cfg.overwrite, "--dest")
    return atomic_dir(cfg.dest, cfg.overwrite, "--dest")


def _save_tokenizer(tok, staging: Path | str) -> str:
    """tokenizer.json into the staging directory (first: for a store, actors take it as the job's sign of
    life); returns its sha256."""
    if not is_remote(str(staging)):
        return save_tokenizer(tok, Path(staging) / "tokenizer.json")
    with tempfile.TemporaryDirectory(prefix="hrm-ray-tok-") as local:
        sha = save_tokenizer(tok, Path(local) / "tokenizer.json")
        write_bytes(join(str(staging), "tokenizer.json"), (Path(local) / "tokenizer.json").read_bytes())
    return sha


def prepare_language_dataset(cfg: PrepareConfig) -> PrepareReport:
    start = time.perf_counter()
    tcfg = _validate(cfg)
    check_dest(cfg.dest, cfg.overwrite, "--dest")
    files = find_files(cfg.source, cfg.max_files)
    opts = ExtractOptions(mode=cfg.mode, text_field=cfg.text_field, language=cfg.language)
    _check_files(files, cfg.source, opts)
    notes: list[str] = []
    tok = _tokenizer(cfg, files, opts, notes)
    units = plan_units(files, cfg.unit_bytes, cfg.max_records)
    ours = not ray.is_initialized()
    ensure_ray(cfg.address)
    with staging_for(cfg) as tmp, user_errors_from_ray():
        sha = _save_tokenizer(tok, tmp)
        rows = sorted(run_pipeline(build_pipeline(units, opts, tok.to_str(), tcfg, cfg, tmp), ours),
                      key=lambda r: r["unit"])
        dropped: Counter = sum((Counter(json.loads(r["dropped"])) for r in rows), Counter())
        samples = {split: sum(int(r[f"rows_{split}"]) for r in rows) for split in SPLITS}
        _check_usable(rows, cfg.source, samples, cfg.val_ratio)
        finish = finish_remote_parts if is_remote(str(tmp)) else finish_parts
        files_by_split = finish(tmp, cfg.format, _shards(rows), len(units))
        docs = sum(int(r["documents"]) for r in rows)
        nodes = len({r["node"] for r in rows})
        if nodes > 1:
            notes.append(f"{len(rows)} work units written by actors on {nodes} nodes")
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
