"""Training steps/s eager vs `--compile` on CPU: the puzzle HRM and the HRM×LM at their demo sizes.

    .venv/bin/python bench/bench_compile.py [--steps 20] [--rounds 30] [--threads 1] [--whole]

Models, batch sizes and optimizers come from the demo profiles (sudoku.yaml: hidden 64, 2+2 layers, 2x2
cycles, ACT, batch 32 of 6x6 Sudoku; stage_b.yaml: d_model 64, 3 HRM cycles of 2 L-steps, deep supervision
and halting, batch 32, 32 + 32 tokens, the demo tokenizer's 2048 words), on random tokens. Each variant
starts from the same weights and runs the same batches with its own RNG stream: its losses over the first
`--steps` steps are compared with eager's (goal: within 1e-4 relative). Then `--rounds` more steps are timed,
one step of each variant in turn so that all see the same machine load; the median step is reported.
`--whole` adds the whole forward compiled as one graph (cycles unrolled), as a reference.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table

from hrm_ray.config import PAPER_FLAGS, build_config
from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata
from hrm_ray.experiments.demo_data import DemoDataSpec
from hrm_ray.models.lm import HRMLanguageModel
from hrm_ray.models.puzzle import puzzle_embeddings
from hrm_ray.train.compile import compile_model
from hrm_ray.train.optim import build_optimizer
from hrm_ray.train.puzzle_task import build_puzzle_model, resolve_model
from hrm_ray.train.sign_sgd import SparseEmbeddingSignSGD

SUDOKU_6X6 = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=8, seq_len=36,
                                   num_puzzle_identifiers=1, total_groups=1, mean_puzzle_examples=1.0, sets=["all"])


@dataclasses.dataclass
class Family:
    name: str
    build: Callable[[], torch.nn.Module]
    optimizers: Callable[[torch.nn.Module], list]
    batches: list[dict[str, torch.Tensor]]


@dataclasses.dataclass
class Variant:
    name: str
    model: torch.nn.Module
    optimizers: list
    rng: torch.Tensor
    compile_s: Callable[[], float] = lambda: 0.0
    carry: object = None
    warmup_s: float = 0.0
    losses: list[float] = dataclasses.field(default_factory=list)
    times: list[float] = dataclasses.field(default_factory=list)


def lm_family(batches: int) -> Family:
    cfg = build_config("experiments/configs/stage_b.yaml", [], profile="demo")
    model_cfg = dataclasses.replace(cfg.model, vocab_size=DemoDataSpec().vocab_size)
    size, half = cfg.train.batch_size, cfg.data.max_seq_len // 2
    g = torch.Generator().manual_seed(0)

    def batch() -> dict[str, torch.Tensor]:
        ids = lambda: torch.randint(4, model_cfg.vocab_size, (size, half), generator=g)
        return {"encoder_ids": ids(), "encoder_mask": torch.ones(size, half, dtype=torch.bool),
                "decoder_input_ids": ids(), "labels": ids()}
    return Family(f"HRM×LM stage_b demo (d_model {model_cfg.d_model}, {model_cfg.hrm.h_cycles}x"
                  f"{model_cfg.hrm.l_cycles} cycles, batch {size})", lambda: HRMLanguageModel(model_cfg),
                  lambda m: [build_optimizer(m.parameters(), cfg.optim)], [batch() for _ in range(batches)])


def puzzle_family(batches: int) -> Family:
    cfg = build_config("experiments/configs/sudoku.yaml", [], profile="demo", aliases=PAPER_FLAGS)
    arch = resolve_model(cfg.model, SUDOKU_6X6)
    size, p = cfg.train.global_batch_size, cfg.optim
    g = torch.Generator().manual_seed(0)

    def optimizers(model: torch.nn.Module) -> list:
        sparse = SparseEmbeddingSignSGD(puzzle_embeddings(model), lr=p.puzzle_emb_lr,
                                        weight_decay=p.puzzle_emb_weight_decay)
        return [build_optimizer(model.parameters(), cfg.optim), sparse]

    def batch() -> dict[str, torch.Tensor]:
        digits = lambda: torch.randint(1, 8, (size, 36), generator=g)
        return {"inputs": digits(), "labels": digits(), "puzzle_identifiers": torch.zeros(size, dtype=torch.long)}
    return Family(f"puzzle HRM sudoku demo (d_model {arch.d_model}, {arch.h_layers}+{arch.l_layers} layers, "
                  f"{arch.h_cycles}x{arch.l_cycles} cycles, batch {size})", lambda: build_puzzle_model(arch),
                  optimizers, [batch() for _ in range(batches)])


def make_variant(family: Family, name: str, backend: str) -> Variant:
    torch.manual_seed(0)
    model = family.build().train()
    variant = Variant(name, model, family.optimizers(model), torch.get_rng_state())
    if name == "--compile":
        report = compile_model(model, backend=backend)
        variant.compile_s = lambda: report.seconds
    elif name == "whole forward":
        model.compile(backend=backend)
    return variant


def step(variant: Variant, batch: dict[str, torch.Tensor]) -> float:
    """One training step in the variant's own RNG stream; returns the loss."""
    torch.set_rng_state(variant.rng)
    start = time.perf_counter()
    if isinstance(variant.model, HRMLanguageModel):
        loss = variant.model(batch, 1.0).loss
    else:
        if variant.carry is None:
            variant.carry = variant.model.initial_carry(batch)
        variant.carry, loss, _, _ = variant.model(variant.carry, batch)
    loss.backward()
    for opt in variant.optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)
    value = loss.item()
    variant.times.append(time.perf_counter() - start)
    variant.rng = torch.get_rng_state()
    return value


def run_family(family: Family, args: argparse.Namespace) -> list[Variant]:
    torch._dynamo.reset()
    names = ["eager", "--compile"] + (["whole forward"] if args.whole else [])
    variants = [make_variant(family, name, args.backend) for name in names]
    for i in range(args.steps):
        for v in variants:
            v.losses.append(step(v, family.batches[i % len(family.batches)]))
    for v in variants:
        v.warmup_s, v.times = sum(v.times), []
    for i in range(args.rounds):
        for v in variants:
            step(v, family.batches[i % len(family.batches)])
    return variants


def add_rows(table: Table, family: Family, variants: list[Variant]) -> None:
    eager = variants[0]
    base = statistics.median(eager.times)
    for v in variants:
        median = statistics.median(v.times)
        rel = max(abs(a - b) / abs(b) for a, b in zip(v.losses, eager.losses, strict=True))
        compile_s = v.compile_s() if v.name == "--compile" else float("nan")
        table.add_row(family.name if v is eager else "", v.name,
                      f"{compile_s:.1f}" if v.name == "--compile" else f"({v.warmup_s:.1f})", f"{median * 1e3:.1f}",
                      f"{1 / median:.2f}", f"{base / median:.2f}x", "-" if v is eager else f"{rel:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps whose losses are compared with eager's")
    parser.add_argument("--rounds", type=int, default=30, help="timed steps per variant after those")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--whole", action="store_true", help="also the whole forward compiled (reference)")
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--families", nargs="+", default=["puzzle", "lm"], choices=("puzzle", "lm"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=160)
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32 CPU, backend "
                  f"{args.backend}; a step = forward + backward + optimizer steps")
    table = Table(title="eager vs --compile: training steps on CPU")
    columns = ("model", "variant", "compile s", "ms/step", "steps/s", "speed-up",
               f"max rel loss diff ({args.steps} steps)")
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    builders = {"puzzle": puzzle_family, "lm": lm_family}
    for name in args.families:
        family = builders[name](batches=8)
        add_rows(table, family, run_family(family, args))
    console.print(table)
    console.print(f"ms/step: median of {args.rounds} steps after the first {args.steps}, variants interleaved step by "
                  "step; compile s: dynamo + inductor time (forward and backward graphs); eager's first steps in "
                  "parentheses")


if __name__ == "__main__":
    main()
