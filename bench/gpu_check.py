"""One-GPU check, without Ray: the models on the device, bf16 training steps, Mamba2 against mamba_ssm,
and tokens/s and MFU of the HRM×LM and the puzzle HRM, eager and compiled. The puzzle checks and bf16 steps run
every puzzle family and preset of the registry (the TRM's included).

    python bench/gpu_check.py                        # on a GPU machine (sized for < 8 min on an H200; not yet run)
    python bench/gpu_check.py --device cpu --tiny    # the same code at a tiny size (tests/test_gpu_check.py)

Sections:
1. model checks: each family's forward on the device against the CPU (same weights, fp32), finite
   gradients, KV-cached generation equal to uncached, the chunked SSD scan against the sequential one;
2. one bf16 training step of each family (autocast, the trainer's optimizers), with the host syncs it
   made (torch.cuda.set_sync_debug_mode; the trainer adds one, its non-finite check);
3. our Mamba2 against mamba_ssm.Mamba2 on the same weights, where mamba_ssm imports;
4. tokens/s and MFU: the HRM×LM at d_model 768 (Stage B's HRM) and the puzzle HRM at the paper's size.
   FLOPs per step are counted by torch's FlopCounterMode on one eager step (every matmul and attention
   that runs, forward and backward: the HRM's reused modules once per application, the ACT Q-target
   segment included); the dense-transformer estimate 6·N·T + 12·A·S·d·T is printed beside it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from hrm_ray.config import OptimConfig
from hrm_ray.models import registry
from hrm_ray.models.hrm_lm.mamba2 import Mamba2, _mamba_ssm_kernels, ssd_chunked, ssd_sequential_scan
from hrm_ray.models.layers import Attention
from hrm_ray.models.lm import HRMLanguageModel, HRMLMConfig
from hrm_ray.models.puzzle import ACTLossHead, PuzzleModelConfig, puzzle_embeddings
from hrm_ray.models.registry import build_model, default_config
from hrm_ray.train.compile import compile_model
from hrm_ray.train.optim import build_optimizer
from hrm_ray.train.sign_sgd import SparseEmbeddingSignSGD

H200_BF16_DENSE_TFLOPS = 989.0
# every puzzle family of the registry: each of its presets, or the family where it has none
PUZZLE_ARCHS = tuple(name for family in registry.FAMILIES.values() if family.task == "puzzle"
                     for name in (list(family.presets) or [family.name]))
Row = tuple[str, str, str]   # check, result, detail


@dataclasses.dataclass
class Sizes:
    """Model and batch sizes of one section: LM (d_model, heads, layers, hrm layers, vocab, batch, enc, dec)
    and puzzle (hidden, heads, layers per level, batch, seq_len)."""
    lm: tuple[int, int, int, int, int, int, int, int]
    puzzle: tuple[int, int, int, int, int]


TINY = Sizes(lm=(32, 2, 1, 1, 64, 4, 16, 8), puzzle=(32, 2, 1, 4, 16))
CHECK = Sizes(lm=(128, 4, 2, 1, 512, 8, 64, 32), puzzle=(128, 4, 2, 16, 81))
BENCH = Sizes(lm=(768, 12, 6, 2, 32000, 32, 256, 256), puzzle=(512, 8, 4, 384, 81))


# ------------------------------------------------------------------------------------- models and data


def lm_config(sizes: Sizes, backend: str = "transformer") -> HRMLMConfig:
    """Stage B's HRM (3 cycles of 2 L-steps, deep supervision, halting) at the given width."""
    d, heads, layers, hrm_layers, vocab = sizes.lm[:5]
    cfg = HRMLMConfig(vocab_size=vocab, d_model=d, n_heads=heads, encoder_layers=layers, decoder_layers=layers,
                      encoder_backend=backend)
    cfg.hrm = dataclasses.replace(cfg.hrm, h_cycles=3, l_cycles=2, h_layers=hrm_layers, l_layers=hrm_layers,
                                  deep_supervision=True, use_halting=True)
    cfg.mamba = dataclasses.replace(cfg.mamba, headdim=min(cfg.mamba.headdim, d // 2), chunk_size=16)
    return cfg


def puzzle_config(sizes: Sizes, arch: str = "hrm_v1") -> PuzzleModelConfig:
    """`arch` at these sizes, each size its config has (the TRM's one network: `layers` blocks)."""
    hidden, heads, layers, _, seq_len = sizes.puzzle
    sizes_of = dict(d_model=hidden, n_heads=heads, h_layers=layers, l_layers=layers, puzzle_emb_ndim=hidden,
                    vocab_size=11, seq_len=seq_len, num_puzzle_identifiers=4, halt_max_steps=16 if hidden >= 512 else 4)
    fields = {f.name for f in dataclasses.fields(registry.resolve(arch)[0].config_class)}
    return default_config(arch, **{k: v for k, v in sizes_of.items() if k in fields})


def build_lm(sizes: Sizes, backend: str = "transformer", seed: int = 0) -> HRMLanguageModel:
    torch.manual_seed(seed)
    return HRMLanguageModel(lm_config(sizes, backend))


def build_puzzle(sizes: Sizes, arch: str, seed: int = 0) -> ACTLossHead:
    torch.manual_seed(seed)
    head = ACTLossHead(build_model(puzzle_config(sizes, arch)))
    for emb in puzzle_embeddings(head):   # a non-zero table, so the prefix carries signal
        emb.weights.normal_(0.0, 0.1)
    return head


def lm_batch(sizes: Sizes, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    vocab, batch, enc, dec = sizes.lm[4:]
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, enc, dtype=torch.bool)
    mask[: batch // 2, enc - enc // 4:] = False   # some right-padded prompts
    labels = torch.randint(4, vocab, (batch, dec), generator=g)
    labels[0, dec // 2:] = -100
    out = {"encoder_ids": torch.randint(4, vocab, (batch, enc), generator=g), "encoder_mask": mask,
           "decoder_input_ids": torch.randint(4, vocab, (batch, dec), generator=g), "labels": labels}
    return {k: v.to(device) for k, v in out.items()}


def puzzle_batch(sizes: Sizes, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    batch, seq_len = sizes.puzzle[3:]
    g = torch.Generator().manual_seed(seed)
    out = {"inputs": torch.randint(1, 11, (batch, seq_len), generator=g),
           "labels": torch.randint(1, 11, (batch, seq_len), generator=g),
           "puzzle_identifiers": torch.randint(0, 4, (batch,), generator=g)}
    return {k: v.to(device) for k, v in out.items()}


def optimizers(model: torch.nn.Module) -> list[torch.optim.Optimizer]:
    """As the trainer builds them: AdamW (fused on CUDA) for the LM; AdamATan2 + sign-SGD for puzzles."""
    if isinstance(model, HRMLanguageModel):
        return [build_optimizer(model.parameters(), OptimConfig())]
    opts = [build_optimizer(model.parameters(), OptimConfig(optimizer="adam_atan2", weight_decay=1.0))]
    embeddings = puzzle_embeddings(model)
    return opts + ([SparseEmbeddingSignSGD(embeddings, lr=1e-4)] if embeddings else [])


def train_step(model: torch.nn.Module, opts: list, batch: dict, device: torch.device, bf16: bool
               ) -> Callable[[], torch.Tensor]:
    """A closure running one training step (forward, backward, optimizer steps) and returning the loss."""
    carry = [None]
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> torch.Tensor:
        with autocast():
            if isinstance(model, HRMLanguageModel):
                loss = model(batch, 1.0).loss
            else:
                if carry[0] is None:
                    carry[0] = model.initial_carry(batch)
                carry[0], loss, _, _ = model(carry[0], batch)
        loss.backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def verdict(ok: bool) -> str:
    return "[green]ok[/green]" if ok else "[red]FAIL[/red]"


# ------------------------------------------------------------------------------------- 1. model checks


def check_lm(sizes: Sizes, device: torch.device, backend: str) -> list[Row]:
    ref = build_lm(sizes, backend).eval()
    model = copy.deepcopy(ref).to(device)
    cpu_batch, batch = lm_batch(sizes, torch.device("cpu")), lm_batch(sizes, device)
    with torch.no_grad():
        diff = max_rel(model(batch, 0.75).logits, ref(cpu_batch, 0.75).logits)
    model.train()
    model(batch, 0.75).loss.backward()
    finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    ids, mask = batch["encoder_ids"], batch["encoder_mask"]
    cached = model.generate(ids, mask, 8, eos_id=None, use_cache=True).tokens
    uncached = model.generate(ids, mask, 8, eos_id=None, use_cache=False).tokens
    name = f"HRM×LM {model.encoder.kernel_path}"
    return [(f"{name}: logits vs CPU", verdict(diff < 1e-3), f"max rel diff {diff:.1e}"),
            (f"{name}: backward", verdict(finite), "every gradient finite"),
            (f"{name}: KV-cache generation", verdict(torch.equal(cached, uncached)), "greedy tokens equal uncached")]


def check_ssd(device: torch.device, length: int) -> Row:
    g = torch.Generator().manual_seed(0)
    b, h, p, n = 2, 4, 16, 16
    x, B, C = (torch.randn(*shape, generator=g).to(device)
               for shape in ((b, length, h, p), (b, length, 1, n), (b, length, 1, n)))
    dt = torch.nn.functional.softplus(torch.randn(b, length, h, generator=g)).to(device) * 0.1
    A, D = -torch.rand(h, generator=g).to(device) - 0.5, torch.ones(h, device=device)
    diff = max_rel(ssd_chunked(x, dt, A, B, C, 16, D), ssd_sequential_scan(x, dt, A, B, C, D))
    return (f"Mamba2 chunked SSD vs sequential scan (L={length})", verdict(diff < 1e-4), f"max rel diff {diff:.1e}")


def check_puzzle(sizes: Sizes, device: torch.device, arch: str) -> list[Row]:
    ref = build_puzzle(sizes, arch).eval()
    head = copy.deepcopy(ref).to(device)
    cpu_batch, batch = puzzle_batch(sizes, torch.device("cpu")), puzzle_batch(sizes, device)
    with torch.no_grad():
        *_, out = head(head.initial_carry(batch), batch, return_outputs=True)
        *_, want = ref(ref.initial_carry(cpu_batch), cpu_batch, return_outputs=True)
    diff = max(max_rel(out[k], want[k]) for k in ("logits", "q_halt_logits", "q_continue_logits"))
    head.train()
    _, loss, _, _ = head(head.initial_carry(batch), batch)
    loss.backward()
    finite = all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    return [(f"{arch}: segment vs CPU", verdict(diff < 1e-3), f"logits and Q, max rel diff {diff:.1e}"),
            (f"{arch}: backward", verdict(bool(finite)), "every gradient finite")]


def model_checks(sizes: Sizes, device: torch.device) -> list[Row]:
    rows = check_lm(sizes, device, "transformer") + check_lm(sizes, device, "mamba2")
    rows.append(check_ssd(device, 64 if sizes is TINY else 1024))
    for arch in PUZZLE_ARCHS:
        rows += check_puzzle(sizes, device, arch)
    return rows


# ------------------------------------------------------------------------------------- 2. bf16 steps


@contextlib.contextmanager
def count_syncs(device: torch.device):
    """Counts host syncs (CUDA only: torch.cuda.set_sync_debug_mode warns at each)."""
    found: list[int] = []
    if device.type != "cuda":
        yield found
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found.append(sum("synchroniz" in str(w.message) for w in caught))


def bf16_step(model: torch.nn.Module, batch: dict, device: torch.device, name: str) -> Row:
    model = model.to(device).train()
    before = [p.detach().clone() for p in model.parameters()]
    opts = optimizers(model)
    step = train_step(model, opts, batch, device, bf16=True)
    step()   # first step: optimizer state, cuBLAS handles
    with count_syncs(device) as syncs:
        loss = step()
    moved = any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    finite = bool(torch.isfinite(loss)) and all(torch.isfinite(p).all() for p in model.parameters())
    sync_text = f", {syncs[0]} host syncs in the step" if syncs else ""
    return (f"{name}: bf16 training step", verdict(finite and moved), f"loss {float(loss):.3f}{sync_text}")


def bf16_steps(sizes: Sizes, device: torch.device) -> list[Row]:
    rows = []
    for backend in ("transformer", "mamba2"):
        model = build_lm(sizes, backend).to(device)
        rows.append(bf16_step(model, lm_batch(sizes, device), device, f"HRM×LM {model.encoder.kernel_path}"))
    return rows + [bf16_step(build_puzzle(sizes, arch), puzzle_batch(sizes, device), device, arch)
                   for arch in PUZZLE_ARCHS]


# ------------------------------------------------------------------------------------- 3. mamba_ssm


def mamba_ssm_rows(device: torch.device) -> list[Row]:
    if device.type != "cuda":
        return [("Mamba2 vs mamba_ssm.Mamba2", "skipped", "mamba_ssm runs on CUDA only")]
    if _mamba_ssm_kernels() is None:
        try:
            import mamba_ssm  # noqa: F401
            reason = "mamba_ssm imports but its Triton kernels do not"
        except Exception as exc:  # not installed, or its compiled extension does not load
            reason = f"mamba_ssm does not import ({type(exc).__name__}: {exc})"
        return [("Mamba2 vs mamba_ssm.Mamba2", "skipped", reason)]
    from mamba_ssm import Mamba2 as TheirMamba2

    torch.manual_seed(0)
    kwargs = dict(d_model=256, d_state=64, headdim=32, chunk_size=64)
    ours = Mamba2(**kwargs, use_mamba_ssm=False).to(device)
    theirs = TheirMamba2(**kwargs).to(device)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 512, 256, device=device)
    rows = []
    with torch.no_grad():
        for dtype in (torch.float32, torch.bfloat16):
            autocast = torch.autocast("cuda", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
            with autocast:
                diff = max_rel(ours(x), theirs(x))
            rows.append((f"Mamba2 (ours, PyTorch SSD) vs mamba_ssm.Mamba2, {str(dtype)[6:]}",
                         verdict(diff < (1e-3 if dtype == torch.float32 else 5e-2)), f"max rel diff {diff:.1e}"))
        ours.use_mamba_ssm = True
        diff = max_rel(ours(x), theirs(x))
    rows.append(("Mamba2 dispatching to mamba_ssm vs mamba_ssm.Mamba2", verdict(diff < 1e-5),
                 f"max rel diff {diff:.1e} (path {ours.kernel_path})"))
    return rows


# ------------------------------------------------------------------------------------- 4. throughput


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def counted_flops(step: Callable[[], torch.Tensor]) -> int:
    """FLOPs of one step as torch counts them (matmuls, convolutions, attention; CPU attention too, which
    torch's table lacks)."""
    cpu_sdpa = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
                torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward}
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa) as counter:
        step()
    return counter.get_total_flops()


def dense_estimate(model: torch.nn.Module, tokens: int, seq: int, width: int) -> float:
    """6·N·T + 12·A·S·d·T: each parameter and each attention module (A of them, context S) once per token."""
    params = sum(p.numel() for p in model.parameters())
    attention = sum(isinstance(m, Attention) for m in model.modules())
    return 6.0 * params * tokens + 12.0 * attention * seq * width * tokens


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_step(step: Callable[[], torch.Tensor], steps: int, device: torch.device) -> float:
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclasses.dataclass
class Throughput:
    name: str
    mode: str
    compile_s: float   # dynamo + inductor seconds
    warmup_s: float    # the untimed steps, compilation included
    step_s: float
    tokens: int
    flops: int
    estimate: float


def measure(name: str, make: Callable[[], torch.nn.Module], batch: dict, tokens: int, seq: int, width: int,
            device: torch.device, args: argparse.Namespace) -> list[Throughput]:
    out, flops = [], 0
    for mode in ("eager", "compiled"):
        torch._dynamo.reset()
        model = make().to(device).train()
        report = compile_model(model, backend=args.compile_backend) if mode == "compiled" else None
        step = train_step(model, optimizers(model), batch, device, bf16=device.type == "cuda")
        start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        sync(device)
        warm = time.perf_counter() - start
        if mode == "eager":
            flops = counted_flops(step)
        out.append(Throughput(name, mode, report.seconds if report else 0.0, warm,
                              seconds_per_step(step, args.steps, device), tokens, flops,
                              dense_estimate(model, tokens, seq, width)))
        del model, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def throughput(sizes: Sizes, device: torch.device, args: argparse.Namespace) -> list[Throughput]:
    d, _, _, _, _, batch, enc, dec = sizes.lm
    lm = measure(f"HRM×LM d_model {d} (Stage B HRM, ds + halting)", lambda: build_lm(sizes),
                 lm_batch(sizes, device), batch * (enc + dec), enc, d, device, args)
    hidden, _, _, pbatch, seq_len = sizes.puzzle
    cfg = puzzle_config(sizes)
    puzzle = measure(f"puzzle HRM hidden {hidden} ({cfg.h_layers}+{cfg.l_layers} layers, "
                     f"{cfg.h_cycles}x{cfg.l_cycles} cycles)", lambda: build_puzzle(sizes, "hrm_v1"),
                     puzzle_batch(sizes, device), pbatch * (seq_len + cfg.puzzle_emb_len), seq_len, hidden,
                     device, args)
    return lm + puzzle


def throughput_table(results: list[Throughput], peak_tflops: float | None) -> Table:
    table = Table(title="Training throughput (bf16 autocast on CUDA, fp32 on CPU; median step)")
    for column in ("model", "mode", "compile s", "warm-up s", "ms/step", "tokens/s", "TFLOP/s", "MFU",
                   "FLOPs/step counted", "6NT+attn/step"):
        table.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for r in results:
        achieved = r.flops / r.step_s / 1e12
        mfu = f"{100 * achieved / peak_tflops:.1f}%" if peak_tflops else "n/a"
        table.add_row(r.name, r.mode, f"{r.compile_s:.1f}" if r.mode == "compiled" else "-", f"{r.warmup_s:.1f}",
                      f"{r.step_s * 1e3:.1f}", f"{r.tokens / r.step_s:,.0f}", f"{achieved:.2f}", mfu,
                      f"{r.flops:.3e}", f"{r.estimate:.3e}")
    return table


# ------------------------------------------------------------------------------------- main


def rows_table(title: str, rows: list[Row]) -> Table:
    table = Table(title=title)
    for column in ("check", "result", "detail"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB), "
                f"CUDA {torch.version.cuda}")
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="tiny models everywhere (the CPU test)")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help=f"peak for MFU (default: {H200_BF16_DENSE_TFLOPS:g}, H200 bf16 dense, on CUDA)")
    parser.add_argument("--sections", nargs="+", default=["checks", "bf16", "mamba_ssm", "throughput"],
                        choices=("checks", "bf16", "mamba_ssm", "throughput"))
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (the compiled model compiles here)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model and mode")
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend (tests: aot_eager)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    """Runs the sections and prints their tables; returns the check rows (tests read them)."""
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but CUDA is not available (use --device cpu --tiny)")
    device = torch.device(args.device)
    peak = args.peak_tflops or (H200_BF16_DENSE_TFLOPS if device.type == "cuda" else None)
    console = Console(width=200)
    console.print(f"gpu_check: torch {torch.__version__} on {describe(device)}; MFU against "
                  f"{f'{peak:g} TFLOP/s' if peak else 'no peak (pass --peak_tflops)'}")
    torch.backends.cudnn.allow_tf32 = False   # fp32 comparisons against the CPU stay fp32
    started, rows = time.perf_counter(), []
    sections = {"checks": lambda: model_checks(TINY if args.tiny else CHECK, device),
                "bf16": lambda: bf16_steps(TINY if args.tiny else CHECK, device),
                "mamba_ssm": lambda: mamba_ssm_rows(device)}
    for name in ("checks", "bf16", "mamba_ssm"):
        if name in args.sections:
            section_rows = sections[name]()
            console.print(rows_table(f"{name} ({time.perf_counter() - started:.0f} s so far)", section_rows))
            rows += section_rows
    if "throughput" in args.sections:
        console.print(throughput_table(throughput(TINY if args.tiny else BENCH, device, args), peak))
        console.print("FLOPs/step counted: every matmul and attention that runs in one training step, forward "
                      "and backward; 6NT+attn: 6 x parameters x tokens + 12 x attention modules x context x "
                      "width x tokens, each parameter counted once per token")
    failed = [r for r in rows if "FAIL" in r[1]]
    console.print(f"gpu_check: {len(rows) - len(failed)} checks ok, {len(failed)} failed, "
                  f"{time.perf_counter() - started:.0f} s")
    return rows


if __name__ == "__main__":
    main()
