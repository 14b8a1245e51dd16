"""Data prep throughput and memory, measured side by side in one run.

1. Throughput: tokens/s of the Ray Data prepare pipeline, end to end (work units -> actors that
   read, clean, tokenize, build triplets and write their Parquet shards), vs the physical limit
   on the same text: raw `Tokenizer.encode_batch` (and `encode_batch_fast`, which the pipeline
   uses) with all cores. Goal: ratio >= 0.8. Measured on --throughput-copies x WikiText-2 (about
   250k tokens a copy) so that the pipeline's fixed costs (Ray actor start-up and planning: ~3 s) are a small part.
2. Scaling: the pipeline with Ray given 1 CPU vs 2 CPUs.
3. Memory: peak RSS of prep and of streaming ingest at 1x and 10x input (goal <= 1.5x growth).

Every measurement runs in its own subprocess (throughput: interleaved, best of two); memory is that process's peak RSS (the driver)
and the peak summed RSS of its whole process tree (driver + Ray's gcs/raylet/workers), sampled.

    .venv/bin/python bench/bench_data_prep.py [--data ../shared/data] [--vocab-size 8000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PAGE = os.sysconf("SC_PAGE_SIZE")
SETTLE_S = 3.0


def tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(entry)] = int(open(f"/proc/{entry}/statm").read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakSampler:
    def __init__(self, interval: float = 0.1):
        self.peak, self.interval, self.stop = 0, interval, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            time.sleep(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def source_texts(src: Path) -> list[str]:
    from hrm_ray.data.records import find_files, iter_records
    from hrm_ray.data.sources import ExtractOptions, extract_document

    texts = []
    for path, prefix in find_files([str(src)]):
        for i, record in enumerate(iter_records(path)):
            doc = extract_document(record, f"{prefix}:{i}", ExtractOptions())
            if doc["status"] == "ok":
                texts.append(doc["text"])
    return texts


def child_raw(args) -> dict:
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    os.environ.pop("RAYON_NUM_THREADS", None)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    texts = source_texts(Path(args.src))
    out = {}
    for name in ("encode_batch", "encode_batch_fast"):
        fn = getattr(tok, name)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            tokens = sum(len(e.ids) for e in fn(texts, add_special_tokens=False))
            best = min(best, time.perf_counter() - start)
        out[name] = {"tokens": tokens, "seconds": best, "tokens_per_s": tokens / best}
    return out


def child_prep(args) -> dict:
    import ray

    from hrm_ray.data.prepare import PrepareConfig, prepare_language_dataset

    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    with PeakSampler() as sampler:
        start = time.perf_counter()
        report = prepare_language_dataset(PrepareConfig(
            source=[args.src], dest=args.dest, tokenizer=args.tokenizer, max_seq_len=256, val_ratio=0.01,
            tokenizer_workers=args.cpus, tokenizer_num_threads=1, tokenizer_batch_size=256, overwrite=True))
        seconds = time.perf_counter() - start
    return {"tokens": report.tokens, "seconds": seconds, "tokens_per_s": report.tokens / seconds,
            "samples": report.samples, "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "tree_peak_rss": sampler.peak}


def child_ingest(args) -> dict:
    import ray

    from hrm_ray.data.ingest import TripletCollate, load_prepared_split, read_meta

    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    meta = read_meta(args.dest)
    with PeakSampler() as sampler:
        start = time.perf_counter()
        shard = load_prepared_split(args.dest, "train").streaming_split(1)[0]
        rows = batches = 0
        for batch in shard.iter_torch_batches(batch_size=64, collate_fn=TripletCollate(meta.pad_id, 256)):
            rows += batch["encoder_ids"].shape[0]
            batches += 1
        seconds = time.perf_counter() - start
    return {"rows": rows, "batches": batches, "seconds": seconds,
            "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "tree_peak_rss": sampler.peak}


def run_child(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    time.sleep(SETTLE_S)  # the previous child's Ray processes may still be exiting: let them go first
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_sources(data: Path, work: Path, copies: int) -> Path:
    """`copies` x the WikiText-2 Parquet files (renamed, so document ids differ)."""
    out = work / f"src_x{copies}"
    out.mkdir()
    for c in range(copies):
        for f in sorted((data / "wikitext2").glob("*.parquet")):
            shutil.copyfile(f, out / f"copy{c:02d}-{f.name}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", default=None)
    parser.add_argument("--src")
    parser.add_argument("--dest")
    parser.add_argument("--tokenizer")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--data", default=os.environ.get("HRM_RAY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--large", type=int, default=10, help="memory: size of the large input, in copies of WikiText-2")
    parser.add_argument("--throughput-copies", type=int, default=100, help="throughput: input size in copies of WikiText-2")
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"raw": child_raw, "prep": child_prep, "ingest": child_ingest}[args.child](args)))
        return

    from hrm_ray.data.tokenizer import save_tokenizer, train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="bench_data_prep_"))
    try:
        small, large = build_sources(Path(args.data), work, 1), build_sources(Path(args.data), work, args.large)
        big = build_sources(Path(args.data), work, args.throughput_copies)
        tok_path = work / "tokenizer.json"
        save_tokenizer(train_tokenizer(source_texts(small), args.vocab_size), tok_path)
        print(f"cores: {os.cpu_count()}; input 1x = WikiText-2 (2 Parquet files), {args.large}x = {args.large} copies, "
              f"throughput on {args.throughput_copies} copies; vocab {args.vocab_size}")

        # interleaved, best of two each: other processes on a shared machine add noise
        raws, prep2s, prep1s = [], [], []
        for _ in range(2):
            raws.append(run_child("raw", src=big, tokenizer=tok_path))
            prep2s.append(run_child("prep", src=big, dest=work / "out_big", tokenizer=tok_path, cpus=2))
            prep1s.append(run_child("prep", src=big, dest=work / "out_big1", tokenizer=tok_path, cpus=1))
        raw = {k: max((r[k] for r in raws), key=lambda m: m["tokens_per_s"]) for k in raws[0]}
        prep2 = max(prep2s, key=lambda m: m["tokens_per_s"])
        prep1 = max(prep1s, key=lambda m: m["tokens_per_s"])
        limit = max(raw["encode_batch"]["tokens_per_s"], raw["encode_batch_fast"]["tokens_per_s"])
        print(f"\n== throughput on {args.throughput_copies}x input ({raw['encode_batch']['tokens']} tokens) ==")
        print(f"raw Tokenizer.encode_batch, all cores      : {limit:12,.0f} tokens/s")
        print(f"raw Tokenizer.encode_batch_fast, all cores : {raw['encode_batch_fast']['tokens_per_s']:12,.0f} tokens/s")
        print(f"Ray Data pipeline, 2 CPUs (end to end)    : {prep2['tokens_per_s']:12,.0f} tokens/s "
              f"({prep2['seconds']:.2f}s, samples {prep2['samples']})")
        print(f"ratio pipeline / raw limit (best of both) : {prep2['tokens_per_s'] / limit:.3f} (goal >= 0.8)")
        print(f"ratio pipeline / encode_batch             : {prep2['tokens_per_s'] / raw['encode_batch']['tokens_per_s']:.3f}")
        print(f"Ray Data pipeline, 1 CPU                  : {prep1['tokens_per_s']:12,.0f} tokens/s ({prep1['seconds']:.2f}s)")
        print(f"scaling 2 CPUs / 1 CPU                    : {prep2['tokens_per_s'] / prep1['tokens_per_s']:.2f}x")

        shutil.rmtree(work / "out_big", ignore_errors=True)
        shutil.rmtree(work / "out_big1", ignore_errors=True)
        prep_small = run_child("prep", src=small, dest=work / "out_small", tokenizer=tok_path, cpus=2)
        prep_large = run_child("prep", src=large, dest=work / "out_large", tokenizer=tok_path, cpus=2)
        ingest_small = run_child("ingest", dest=work / "out_small", cpus=2)
        ingest_large = run_child("ingest", dest=work / "out_large", cpus=2)
        mib = 1 << 20
        print(f"\n== peak memory (MiB): 1x vs {args.large}x input ==")
        for name, a, b in (("prep", prep_small, prep_large), ("ingest", ingest_small, ingest_large)):
            for key, label in (("driver_peak_rss", "driver RSS"), ("tree_peak_rss", "process-tree RSS")):
                print(f"{name:6s} {label:17s}: 1x {a[key] / mib:8.1f}   {args.large}x {b[key] / mib:8.1f}   "
                      f"growth {b[key] / a[key]:.2f}x (goal <= 1.5x)")
        print(f"ingest rows: 1x {ingest_small['rows']} in {ingest_small['seconds']:.2f}s, "
              f"{args.large}x {ingest_large['rows']} in {ingest_large['seconds']:.2f}s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
