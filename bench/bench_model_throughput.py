"""Forward+backward tokens/s of the default small config on CPU: transformer vs mamba2 encoder.

Tokens counted = encoder + decoder positions of the batch.  Usage:
python bench/bench_model_throughput.py [--batch 16] [--enc_len 128] [--dec_len 32] [--iters 5] [--threads N]
"""
from __future__ import annotations

import argparse
import time

import torch

from hrm_ray.config import Config
from hrm_ray.models.lm import HRMLanguageModel


def random_batch(batch: int, enc_len: int, dec_len: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(4, vocab, (batch, dec_len), generator=g)
    return {"encoder_ids": torch.randint(4, vocab, (batch, enc_len), generator=g),
            "encoder_mask": torch.ones(batch, enc_len, dtype=torch.bool),
            "decoder_input_ids": torch.randint(4, vocab, (batch, dec_len), generator=g),
            "labels": labels, "decoder_mask": torch.ones(batch, dec_len, dtype=torch.bool)}


def build(backend: str) -> HRMLanguageModel:
    torch.manual_seed(0)
    cfg = Config().model
    cfg.vocab_size, cfg.encoder_backend = 100, backend
    return HRMLanguageModel(cfg).train()


def step_seconds(model: HRMLanguageModel, batch: dict[str, torch.Tensor]) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    model(batch, gate_scale=1.0).loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--enc_len", type=int, default=128)
    parser.add_argument("--dec_len", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = random_batch(args.batch, args.enc_len, args.dec_len, 100)
    print(f"default small config, batch={args.batch} enc_len={args.enc_len} dec_len={args.dec_len} "
          f"threads={torch.get_num_threads()}, forward+backward, gate open")
    models = {backend: build(backend) for backend in ("transformer", "mamba2")}
    seconds = {backend: 0.0 for backend in models}
    for model in models.values():
        step_seconds(model, batch)  # warm-up
    for _ in range(args.iters):  # interleaved, so both see the same machine load
        for backend, model in models.items():
            seconds[backend] += step_seconds(model, batch)
    tokens = batch["encoder_ids"].numel() + batch["decoder_input_ids"].numel()
    rates = {backend: tokens * args.iters / s for backend, s in seconds.items()}
    for backend, model in models.items():
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{backend:<12} {rates[backend]:>10,.0f} tokens/s  ({model.encoder.kernel_path}, {params:.2f}M params)")
    print(f"mamba2 / transformer: {rates['mamba2'] / rates['transformer']:.2f}x")


if __name__ == "__main__":
    main()
