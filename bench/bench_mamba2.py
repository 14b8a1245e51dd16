"""Chunked SSD vs the naive sequential scan: forward + backward time, speed ratio, max difference.

Both run side by side in one process on the same inputs (shaped like a Mamba2 block's: dt and
A from the block's initialisation); the chunked SSD also under torch.compile (inductor; compiled once
per length, its first call not timed). Usage: python bench/bench_mamba2.py [--lengths 256 1024 4096]
[--no_compile]
"""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from hrm_ray.models.hrm_lm.mamba2 import Mamba2, ssd_chunked, ssd_sequential_scan

Inputs = tuple[torch.Tensor, ...]


def make_inputs(block: Mamba2, batch: int, length: int, seed: int) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, block.nheads, block.headdim, generator=g)
    dt = F.softplus(torch.randn(batch, length, block.nheads, generator=g) + block.dt_bias.detach())
    A = -torch.exp(block.A_log.detach().float())
    B = torch.randn(batch, length, block.ngroups, block.d_state, generator=g)
    C = torch.randn(batch, length, block.ngroups, block.d_state, generator=g)
    return x, dt, A, B, C, block.D.detach().clone()


def forward_backward(fn: Callable[..., torch.Tensor], inputs: Inputs, grad_out: torch.Tensor
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().requires_grad_() for t in inputs]
    y = fn(*leaves)
    y.backward(grad_out)
    return y.detach(), [t.grad for t in leaves]


def best_seconds(fn: Callable[..., torch.Tensor], inputs: Inputs, grad_out: torch.Tensor, repeats: int) -> float:
    """Fastest of `repeats` calls: the least disturbed by other work on a shared machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward_backward(fn, inputs, grad_out)
        times.append(time.perf_counter() - start)
    return min(times)


def compiled_seconds(fn: Callable[..., torch.Tensor], inputs: Inputs, grad_out: torch.Tensor, repeats: int,
                     reference: torch.Tensor) -> tuple[float, float, float]:
    """(first call seconds, compilation included; best call seconds; max |dy| against `reference`)."""
    start = time.perf_counter()
    y, _ = forward_backward(fn, inputs, grad_out)
    first = time.perf_counter() - start
    return first, best_seconds(fn, inputs, grad_out, repeats), (y - reference).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--d_model", type=int, default=256)
    parser.add_argument("--expand", type=int, default=2)
    parser.add_argument("--headdim", type=int, default=32)
    parser.add_argument("--d_state", type=int, default=64)
    parser.add_argument("--ngroups", type=int, default=1)
    parser.add_argument("--chunk_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls of the chunked SSD per length")
    parser.add_argument("--seq_repeats", type=int, default=2,
                        help="timed calls of the sequential scan per length (it is slow)")
    parser.add_argument("--seq_long_repeats", type=int, default=1,
                        help="timed calls of the sequential scan for lengths above --long")
    parser.add_argument("--long", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_compile", action="store_true", help="skip the torch.compile'd chunked SSD")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    block = Mamba2(d_model=args.d_model, d_state=args.d_state, expand=args.expand, headdim=args.headdim,
                   ngroups=args.ngroups, chunk_size=args.chunk_size)
    chunked = lambda *t: ssd_chunked(*t[:5], args.chunk_size, t[5])
    compiled = None if args.no_compile else torch.compile(chunked, dynamic=False)
    console = Console(width=180)
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32 CPU; batch {args.batch}, "
                  f"heads {block.nheads} x headdim {block.headdim}, d_state {block.d_state}, "
                  f"ngroups {block.ngroups}, chunk {args.chunk_size}; forward + backward per call")

    # Warm-up: both implementations once at the shortest length (the sequential scan's per-step
    # ops do not change with the length), the chunked one again at every length below.
    warm = make_inputs(block, args.batch, min(args.lengths), args.seed)
    for fn in (chunked, ssd_sequential_scan):
        forward_backward(fn, warm, torch.ones_like(warm[0]))

    table = Table(title="Mamba2 SSD: chunked vs sequential scan (forward + backward)")
    for column in ("L", "chunked ms", "sequential ms", "speed-up", "max |dy|", "max |dgrad| / max |grad|",
                   "seq calls timed", "compiled ms", "seq / compiled", "compiled max |dy|", "first call s"):
        table.add_column(column, justify="right")
    for length in args.lengths:
        inputs = make_inputs(block, args.batch, length, args.seed + length)
        grad_out = torch.randn_like(inputs[0])
        y_chunk, g_chunk = forward_backward(chunked, inputs, grad_out)  # warm-up at this length
        y_seq, g_seq = forward_backward(ssd_sequential_scan, inputs, grad_out)
        seq_repeats = args.seq_long_repeats if length > args.long else args.seq_repeats
        t_chunk = best_seconds(chunked, inputs, grad_out, args.repeats)
        t_seq = best_seconds(ssd_sequential_scan, inputs, grad_out, seq_repeats)
        dy = (y_chunk - y_seq).abs().max().item()
        dgrad = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(g_chunk, g_seq, strict=True))
        row = [str(length), f"{t_chunk * 1e3:.1f}", f"{t_seq * 1e3:.1f}", f"{t_seq / t_chunk:.1f}x",
               f"{dy:.2e}", f"{dgrad:.2e}", str(seq_repeats)]
        if compiled is not None:
            first, t_comp, dy_comp = compiled_seconds(compiled, inputs, grad_out, args.repeats, y_seq)
            row += [f"{t_comp * 1e3:.1f}", f"{t_seq / t_comp:.1f}x", f"{dy_comp:.2e}", f"{first:.1f}"]
        table.add_row(*row)
    console.print(table)
    console.print(f"times: best of {args.repeats} calls (chunked) and of {args.seq_repeats} calls (sequential; "
                  f"{args.seq_long_repeats} for L > {args.long}: it is slow), each after one untimed call at "
                  "the same length whose outputs and gradients give the differences")


if __name__ == "__main__":
    main()
