"""`hrm-ray generate`: complete prompts with a trained run or checkpoint and report the HRM cycles used."""
from __future__ import annotations

import argparse
import sys

import torch

from hrm_ray.errors import UserError
from hrm_ray.infer.generate import complete
from hrm_ray.infer.loading import load_for_inference


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", action="append", required=True,
                        help="a prompt to complete (repeat for a batch)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run_name", help="run under --save_dir: its best-model/, else its newest checkpoint")
    source.add_argument("--checkpoint", help="a best-model/ or checkpoint_* directory")
    parser.add_argument("--save_dir", default="", help="where runs live: a directory, s3:// or gs:// (default: "
                                                       "$HRM_RAY_STORAGE, else ~/hrm-ray/runs)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0, help="0 = off")
    parser.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--no_cache", action="store_true", help="recompute the decoder each step (slow)")
    parser.add_argument("--no_adaptive_halting", action="store_true",
                        help="always run every HRM cycle instead of halting early")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dataset", default="", help="accepted for the seed's form (`--dataset synthetic`); the "
                                                      "tokenizer always comes from the run, which records its data")


def run(args: argparse.Namespace) -> int:
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device: '{args.device}' is not one of auto, cpu, cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    loaded = load_for_inference(args.run_name, args.save_dir, args.checkpoint, device)
    completions = complete(
        loaded.model, loaded.tokenizer, args.prompt, args.max_new_tokens, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed, use_cache=not args.no_cache,
        adaptive_halting=not args.no_adaptive_halting, max_prompt_len=loaded.config.data.max_seq_len)
    if args.dataset:
        print(f"note: --dataset {args.dataset}: the tokenizer comes from the run "
              f"(trained on data.dataset={loaded.config.data.dataset})", file=sys.stderr)
    hrm = loaded.config.model.hrm
    print(f"model: {loaded.path}")
    for c in completions:
        cycles = f"{c.cycles_used}/{hrm.h_cycles}" if hrm.enabled else "no HRM"
        print(f"prompt: {c.prompt}\ncompletion: {c.text}\nhrm cycles used: {cycles}\n")
    return 0
