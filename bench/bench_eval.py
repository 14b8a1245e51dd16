"""Task evaluation throughput: batched KV-cached greedy generation against one prompt at a time, and the Ray
Data actor pool with 1 against 2 actors. Default small config (random weights), CPU.

Prints prompts/s of each, the ratios (goal >= 10x for batching) and whether the outputs are identical, for
short prompts (arithmetic: decoding dominates) and GSM8K questions (~250 characters: the encoder and the
HRM over the prompt, the same work batched or not on a CPU, dominate).
Usage: python bench/bench_eval.py [--prompts 128] [--batch 64] [--new_tokens 32] [--skip_ray]
The Ray figures include starting the actors and loading the model in each (what `--num_workers` costs).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from hrm_ray.config import Config, save_yaml
from hrm_ray.data.synthetic import char_tokenizer
from hrm_ray.evals.scoring import Thinking, generate_texts
from hrm_ray.evals.tasks import Example, get_task
from hrm_ray.models.lm import HRMLanguageModel
from hrm_ray.train.checkpoint import MODEL_FILE
from hrm_ray.train.safe_files import save_weights

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def gsm8k_prompts(n: int) -> list[str]:
    lines = (REPO / "tests" / "data" / "gsm8k" / "train.jsonl").read_text().splitlines()
    return [json.loads(lines[i % len(lines)])["question"] for i in range(n)]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def save_model_dir(model: HRMLanguageModel, cfg: Config, tok) -> Path:
    directory = Path(tempfile.mkdtemp(prefix="bench-eval-")) / "best-model"
    directory.mkdir()
    save_weights(model.state_dict(), directory / MODEL_FILE)
    save_yaml(cfg, directory / "config.yaml")
    tok.save(str(directory / "tokenizer.json"))
    (directory / "meta.json").write_text(json.dumps({"step": 0}))
    return directory


def arithmetic_prompts(n: int) -> list[str]:
    return [f"What is {i % 97} + {(7 * i) % 89}?" for i in range(n)]


def bench_batching(model, tok, prompts: list[str], args) -> list[str]:
    print(f"-- {len(prompts[0])}-{max(map(len, prompts))} character prompts")
    how = Thinking(max_seq_len=256, batch_size=args.batch)
    generate_texts(model, tok, prompts[:4], args.new_tokens, how=how)  # warm-up
    batched_s, batched = timed(lambda: generate_texts(model, tok, prompts, args.new_tokens, how=how))
    singles = prompts[:args.single_prompts]
    single_s, single = timed(lambda: generate_texts(model, tok, singles, args.new_tokens,
                                                    how=Thinking(max_seq_len=256, batch_size=1)))
    batched_rate, single_rate = len(prompts) / batched_s, len(singles) / single_s
    print(f"batched (batch {args.batch}): {batched_rate:8.1f} prompts/s ({len(prompts)} prompts, {batched_s:.2f} s)")
    print(f"one at a time:      {single_rate:8.1f} prompts/s ({len(singles)} prompts, {single_s:.2f} s)")
    print(f"batching speed-up:  {batched_rate / single_rate:.1f}x (goal >= 10x)")
    print(f"outputs identical:  {batched[:len(singles)] == single}")
    return batched


def bench_ray(directory: Path, prompts: list[str], args) -> list[str]:
    from hrm_ray.infer.ray_eval import predict_with_ray
    from hrm_ray.ray_env import ensure_ray

    ensure_ray(num_cpus=args.ray_cpus)
    task = get_task("arithmetic")
    suite = [(task, [Example(p, "0") for p in prompts])]
    how = Thinking(max_seq_len=256, batch_size=args.batch // 2)
    rates, outputs = {}, {}
    for workers in (1, 2):
        seconds, [records] = timed(lambda w=workers: predict_with_ray(str(directory), suite, how, args.new_tokens, w))
        rates[workers], outputs[workers] = len(prompts) / seconds, [r["output"] for r in records]
        print(f"ray, {workers} actor{'s' * (workers > 1)}:      {rates[workers]:8.1f} prompts/s ({seconds:.2f} s, "
              "actor start included)")
    print(f"2 vs 1 actors:      {rates[2] / rates[1]:.2f}x")
    print(f"outputs identical:  {outputs[1] == outputs[2]}")
    return outputs[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--single_prompts", type=int, default=32, help="prompts timed one at a time")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--ray_cpus", type=int, default=2)
    parser.add_argument("--skip_ray", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    tok = char_tokenizer()
    cfg = Config()
    cfg.model.vocab_size = tok.get_vocab_size()
    model = HRMLanguageModel(cfg.model).eval()
    with torch.no_grad():
        model.embed.weight[:4] = 0.0  # no early EOS from random weights: every prompt writes new_tokens
    prompts = gsm8k_prompts(args.prompts)
    print(f"config: d_model={cfg.model.d_model} hrm={cfg.model.hrm.h_cycles}x{cfg.model.hrm.l_cycles} "
          f"new_tokens={args.new_tokens} threads={torch.get_num_threads()}")
    bench_batching(model, tok, arithmetic_prompts(args.prompts), args)  # short prompts: decoding dominates
    local = bench_batching(model, tok, prompts, args)  # GSM8K questions: encoder + HRM over ~250 tokens
    if not args.skip_ray:
        ray_outputs = bench_ray(save_model_dir(model, cfg, tok), prompts, args)
        print(f"ray outputs == in-process: {ray_outputs == local}")


if __name__ == "__main__":
    main()
