"""KV-cached generation vs recomputing the decoder every step, default small config, CPU.

Prints the time of each, the speed ratio (goal >= 5x at 128 new tokens) and whether the greedy
outputs are identical.  Usage: python bench/bench_generation.py [--new_tokens 128] [--batch 8]
"""
from __future__ import annotations

import argparse
import time

import torch

from hrm_ray.config import Config
from hrm_ray.data.synthetic import arithmetic_pairs, char_tokenizer, make_triplets, pad_batch
from hrm_ray.models.lm import HRMLanguageModel


def timed(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    tok = char_tokenizer()
    cfg = Config().model
    cfg.vocab_size = tok.get_vocab_size()
    model = HRMLanguageModel(cfg).eval()
    batch = pad_batch(make_triplets(arithmetic_pairs("val", args.batch), tok))
    ids, mask = batch["encoder_ids"], batch["encoder_mask"]
    run = lambda cache: model.generate(ids, mask, args.new_tokens, eos_id=None, use_cache=cache)
    run(True)  # warm-up
    cached_s, cached = timed(lambda: run(True), args.repeats)
    full_s, full = timed(lambda: run(False), args.repeats)
    print(f"config: d_model={cfg.d_model} decoder_layers={cfg.decoder_layers} encoder={cfg.encoder_backend} "
          f"hrm={cfg.hrm.h_cycles}x{cfg.hrm.l_cycles} batch={args.batch} new_tokens={args.new_tokens} "
          f"threads={torch.get_num_threads()} (best of {args.repeats})")
    print(f"kv cache:  {cached_s:.3f} s  ({args.batch * args.new_tokens / cached_s:,.0f} tokens/s)")
    print(f"recompute: {full_s:.3f} s  ({args.batch * args.new_tokens / full_s:,.0f} tokens/s)")
    print(f"speed-up:  {full_s / cached_s:.2f}x")
    print(f"greedy outputs identical: {torch.equal(cached.tokens, full.tokens)} "
          f"({cached.tokens.shape[1]} tokens each)")


if __name__ == "__main__":
    main()
