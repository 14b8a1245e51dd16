"""The README demo: the HRM x LM curriculum in miniature, on CPU.

build demo data (Stage A's job does it) -> Stage A (gate closed) -> Stage B initialised from Stage A's
best model (gate opens after its warmup, deep supervision, halting) -> eval of both on the math
validation set -> `hrm-ray report` of both runs -> a summary of the gate opening and halt Σ moving, and Stage
B's last validation per data source and task metric (its `eval:` section: the demo's held-out word problems).
"""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hrm_ray.console import take_verbose_flag
from hrm_ray.errors import UserError
from hrm_ray.experiments.stage import DEMO_PROFILE, run_stage
from hrm_ray.train.run_plan import run_plan

EVAL_SAMPLES = 512


@dataclass
class DemoResult:
    seconds: float
    runs: dict[str, Path]
    evals: dict[str, float] = field(default_factory=dict)  # run -> math val loss
    reports: dict[str, Path] = field(default_factory=dict)
    gate_lines: list[str] = field(default_factory=list)
    reasoning_lines: list[str] = field(default_factory=list)  # Stage B's per-source validation, task metrics


def read_records(run_dir: Path, split: str = "train") -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == split]


def reasoning_summary(val: list[dict], evals: list[dict]) -> list[str]:
    """The last validation's loss per data source (and its gate μ), and the last task evaluation's metrics."""
    lines = []
    if val:
        last = val[-1]
        sources = [k[:-len("/loss")] for k in last if k.endswith("/loss")]
        lines += [f"val @ step {last['step']} | {name:<8} loss {last[f'{name}/loss']:.3f} | perplexity "
                  f"{last[f'{name}/perplexity']:.1f}" + (f" | gate μ {last[f'{name}/gate_mean']:.3f}"
                                                           if f"{name}/gate_mean" in last else "")
                  for name in sources]
        lines.append(f"val @ step {last['step']} | whole mix loss {last['loss']:.3f}")
    for record in evals[-1:]:
        lines += [f"eval @ step {record['step']} | {key} {value:.1%}" for key, value in record.items()
                  if "/" in key and isinstance(value, (int, float))]
    return lines


def gate_halt_summary(records: list[dict], rows: int = 8) -> list[str]:
    """A few evenly spaced train records: gate scale, gate μ [min, max], halt Σ against its target."""
    if not records:
        return []
    picks = {round(i * (len(records) - 1) / max(1, rows - 1)) for i in range(rows)}
    opened = next((i for i, r in enumerate(records) if r.get("gate_scale", 1.0) > 0), None)
    if opened:  # the last record with the gate closed and the first with it open
        picks |= {opened - 1, opened}
    picks = sorted(picks)
    lines = []
    for record in (records[i] for i in picks):
        line = (f"step {record['step']:>5} | loss {record['loss']:.3f} | gate scale {record.get('gate_scale', 1.0):.2f}"
                f" | gate μ {record.get('gate_mean', 0.0):.3f} [{record.get('gate_min', 0.0):.3f}, "
                f"{record.get('gate_max', 0.0):.3f}]")
        if "halt_sum_mean" in record:
            line += f" | halt Σ {record['halt_sum_mean']:.3f} (target {record.get('halt_target', 1.0):.2f})"
        lines.append(line)
    return lines


def run_demo(configs_dir: str | Path, overrides_a: list[str] | None = None, overrides_b: list[str] | None = None,
             log: Callable[[str], None] = print) -> DemoResult:
    start = time.perf_counter()
    configs_dir = Path(configs_dir)
    log("[bold]== Stage A: language only, HRM gate closed ==[/bold]")
    cfg_a, _ = run_stage(configs_dir / "stage_a.yaml", DEMO_PROFILE, list(overrides_a or []), log)
    log("[bold]== Stage B: initialised from Stage A's best model; gate opens after warmup; 90/5/5 mix ==[/bold]")
    cfg_b, _ = run_stage(configs_dir / "stage_b.yaml", DEMO_PROFILE, list(overrides_b or []), log)
    runs = {cfg.train.run_name: Path(run_plan(cfg).run_dir(cfg.train.run_name)) for cfg in (cfg_a, cfg_b)}
    result = DemoResult(0.0, runs)

    from hrm_ray.data.ingest import parse_dataset_spec
    from hrm_ray.infer.lm_eval import evaluate_model
    from hrm_ray.infer.loading import load_for_inference
    from hrm_ray.report.build import build_report

    math_data = next(p for p, _ in parse_dataset_spec(cfg_b.data.dataset) if Path(p).name == "math")
    log(f"[bold]== Eval: both models on the held-out math problems ({math_data}) ==[/bold]")
    for name, run_dir in runs.items():
        loaded = load_for_inference(name, run_dir.parent)
        metrics = evaluate_model(loaded, math_data, max_samples=EVAL_SAMPLES, batch_size=128)
        result.evals[name] = metrics.loss
        log(f"{name}: " + "; ".join(metrics.lines()))
    for name, run_dir in runs.items():
        result.reports[name] = build_report(run_dir)
        log(f"report: {result.reports[name]}")
    result.gate_lines = gate_halt_summary(read_records(runs[cfg_b.train.run_name]))
    log(f"[bold]== Stage B: the gate opening and halt Σ moving ({cfg_b.train.run_name}) ==[/bold]")
    for line in result.gate_lines:
        log(line)
    run_b = runs[cfg_b.train.run_name]
    result.reasoning_lines = reasoning_summary(read_records(run_b, "val"), read_records(run_b, "eval"))
    log(f"[bold]== Stage B per data source, and its task metric ({', '.join(cfg_b.eval.tasks) or 'none'}) ==[/bold]")
    for line in result.reasoning_lines:
        log(line)
    result.seconds = time.perf_counter() - start
    log(f"demo finished in {result.seconds / 60:.1f} min")
    return result


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """`--a.FLAG [value]` goes to Stage A, `--b.FLAG [value]` to Stage B, anything else to both."""
    a: list[str] = []
    b: list[str] = []
    target: list[str] | None = None
    for token in argv:
        if token.startswith(("--a.", "--b.")):
            target = a if token[2] == "a" else b
            target.append("--" + token[4:])
            if "=" in token:
                target = None
        elif target is not None and not token.startswith("--") and "=" not in token:
            target.append(token)
            target = None
        else:
            target = None
            a.append(token)
            b.append(token)
    return a, b


def demo_main(configs_dir: str | Path, argv: Sequence[str] | None = None) -> int:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    try:
        argv = take_verbose_flag(list(sys.argv[1:] if argv is None else argv))
        run_demo(configs_dir, *split_overrides(argv), log=console.print)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
