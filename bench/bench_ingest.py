"""Ingest headroom: batches/s a streaming Ray Dataset shard delivers through
`iter_torch_batches` (collate padding per batch) vs batches/s the default small HRM x LM model
(hrm_ray.models.lm.HRMLanguageModel, d_model 256) consumes training on CPU, side by side in one run.
Goal: delivery >= 5x consumption, so the data path never starves a CPU worker.

    .venv/bin/python bench/bench_ingest.py [--data ../shared/data] [--batch-size 32] [--seq-len 256]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("HRM_RAY_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--deliver-batches", type=int, default=300)
    parser.add_argument("--train-batches", type=int, default=4)
    args = parser.parse_args()

    import ray
    import torch

    from hrm_ray.data.ingest import TripletCollate, load_prepared_split, read_meta
    from hrm_ray.data.prepare import PrepareConfig, prepare_language_dataset
    from hrm_ray.models.lm import HRMLanguageModel, HRMLMConfig

    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        prepared = prepare_language_dataset(PrepareConfig(
            source=[str(Path(args.data) / "wikitext2")], dest=str(work / "wiki"), vocab_size=8000,
            max_seq_len=args.seq_len, val_ratio=0.0, tokenizer_workers=2))
        meta = read_meta(work / "wiki")
        collate = TripletCollate(meta.pad_id, args.seq_len)
        print(f"dataset: WikiText-2 continuation triplets, {prepared.samples['train']} rows, "
              f"encoder {meta.raw['encoder_len']} / decoder {meta.raw['decoder_len']} tokens, vocab {meta.vocab_size}")

        # delivery: a streaming shard, as ray.train.get_dataset_shard hands to a worker
        shard = load_prepared_split(str(work / "wiki"), "train").streaming_split(1)[0]
        delivered, first_at, start = 0, None, time.perf_counter()
        batches = []
        while delivered < args.deliver_batches:
            for batch in shard.iter_torch_batches(batch_size=args.batch_size, collate_fn=collate, drop_last=True):
                if first_at is None:
                    first_at = time.perf_counter()
                if len(batches) < args.train_batches:
                    batches.append(batch)
                delivered += 1
                if delivered >= args.deliver_batches:
                    break
        end = time.perf_counter()
        steady = (delivered - 1) / (end - first_at)
        overall = delivered / (end - start)

        # consumption: forward + backward + AdamW step of the default small model on CPU
        torch.manual_seed(0)
        model = HRMLanguageModel(HRMLMConfig(vocab_size=meta.vocab_size))
        optim = torch.optim.AdamW(model.parameters(), lr=1e-4)
        params = sum(p.numel() for p in model.parameters())

        def step(batch):
            out = model(batch)
            out.loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)

        step(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        consumed = len(batches) / (time.perf_counter() - start)

        print(f"torch threads {torch.get_num_threads()}, batch {args.batch_size}")
        print(f"delivered  (streaming shard, iter_torch_batches + collate): {steady:9.1f} batches/s steady, "
              f"{overall:.1f} batches/s including start-up ({delivered} batches)")
        print(f"consumed   (HRMLanguageModel d_model 256, {params / 1e6:.2f}M params, fwd+bwd+AdamW): "
              f"{consumed:9.2f} batches/s")
        print(f"headroom   delivered / consumed: {steady / consumed:.1f}x steady, {overall / consumed:.1f}x "
              f"with start-up (goal >= 5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
