"""Report on one training run: read its metrics.jsonl, plot the curves, write report.md.

metrics.jsonl (written by `hrm_ray.train.metrics.MetricsLogger`) holds one JSON object a line with
"step" and "split". Train lines carry loss, lr, grad_norm, tokens_per_s, gate_mean/min/max,
gate_scale, halt_sum_mean/min/max, halt_target, and on a mixture mix_<source> and gate_src_<source> (that
source's mean gate, one curve each in gate_by_source.png); val lines carry loss (or val_loss), perplexity,
and task metrics such as exact_accuracy, on a mixture `<source>/loss` per source; eval lines carry the
`eval:` section's task metrics (`<task>/<metric>`), drawn with them in reasoning.png
(hrm_ray.report.reasoning_report). Non-finite values arrive as the strings "nan"/"inf".
Missing keys skip a panel; the summary says which.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from hrm_ray.errors import UserError
from hrm_ray.report.plots import Line, plot_lines
from hrm_ray.report.puzzle_report import plot_puzzle
from hrm_ray.report.reasoning_report import plot_reasoning, reasoning_summary

METRICS_FILE = "metrics.jsonl"
VAL_LOSS_KEYS = ("val_loss", "loss")
VAL_PPL_KEYS = ("val_ppl", "perplexity", "ppl")
EXACT_KEYS = ("exact_match", "exact_accuracy")
SOURCE_GATE = "gate_src_"  # the prefix hrm_ray.train.lm_task logs each mixture source's mean gate under


def number(value: object) -> float | None:
    """A metric value as a float ("nan"/"inf" strings included); None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass
class RunMetrics:
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    eval: list[dict] = field(default_factory=list)  # task evaluations during training
    notes: list[str] = field(default_factory=list)

    def series(self, split: str, *keys: str) -> tuple[list[float], list[float]]:
        """(steps, values) of the first key present in each record of `split`."""
        steps, values = [], []
        for record in {"train": self.train, "val": self.val, "eval": self.eval}[split]:
            value = next((number(record[k]) for k in keys if k in record), None)
            if value is not None:
                steps.append(float(record["step"]))
                values.append(value)
        return steps, values

    def last(self, split: str, *keys: str) -> float | None:
        _, values = self.series(split, *keys)
        finite = [v for v in values if math.isfinite(v)]
        return finite[-1] if finite else None


def read_metrics(path: Path) -> RunMetrics:
    """Parse metrics.jsonl. A resumed run logs some steps twice: the later line wins. An unreadable
    last line (a run still writing, or killed mid-write) is skipped and noted; any other is an error."""
    lines = path.read_text().splitlines()
    by_split: dict[str, dict[int, dict]] = {"train": {}, "val": {}, "eval": {}}
    metrics = RunMetrics()
    for number_, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            if number_ == len(lines):
                metrics.notes.append(f"the last line of {path.name} is incomplete and was skipped")
                continue
            raise UserError(f"{path}:{number_}: not a JSON object ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number_}: expected a JSON object, got {type(record).__name__}")
        for key in ("step", "split"):
            if key not in record:
                raise UserError(f"{path}:{number_}: missing field '{key}'")
        step = number(record["step"])
        if step is None:
            raise UserError(f"{path}:{number_}: field 'step' is not a number: {record['step']!r}")
        if record["split"] not in by_split:
            continue
        by_split[record["split"]][int(step)] = record
    metrics.train = [by_split["train"][s] for s in sorted(by_split["train"])]
    metrics.val = [by_split["val"][s] for s in sorted(by_split["val"])]
    metrics.eval = [by_split["eval"][s] for s in sorted(by_split["eval"])]
    if not metrics.train and not metrics.val:
        raise UserError(f"{path}: no train or val records")
    return metrics


def summarise(m: RunMetrics) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    steps = [r["step"] for r in m.train + m.val]
    rows.append(("steps", str(int(max(steps)))))
    v_steps, v_loss = m.series("val", *VAL_LOSS_KEYS)
    finite = [(loss, s) for s, loss in zip(v_steps, v_loss, strict=True) if math.isfinite(loss)]
    if finite:
        best, at = min(finite)
        rows.append(("best val loss", f"{best:.4f} at step {int(at)}"))
        rows.append(("final val loss", f"{finite[-1][0]:.4f} at step {int(finite[-1][1])}"))
    ppl = m.last("val", *VAL_PPL_KEYS)
    if ppl is not None:
        rows.append(("final val perplexity", f"{ppl:.2f}"))
    exact = m.series("val", *EXACT_KEYS)[1]
    if exact:
        rows.append(("best val exact match", f"{max(exact):.4f}"))
    loss = m.last("train", "loss")
    if loss is not None:
        rows.append(("final train loss", f"{loss:.4f}"))
    tps = [v for v in m.series("train", "tokens_per_s")[1] if math.isfinite(v)]
    if tps:
        rows.append(("tokens/s (median)", f"{statistics.median(tps):,.0f}"))
    gate = m.last("train", "gate_mean")
    if gate is not None:
        lo, hi, scale = (m.last("train", k) for k in ("gate_min", "gate_max", "gate_scale"))
        band = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        rows.append(("gate μ at end", f"{gate:.3f}{band}" + (f", gate scale {scale:.2f}" if scale is not None else "")))
    by_source = [f"{name} {m.last('train', SOURCE_GATE + name):.3f}" for name in gate_sources(m)]
    if by_source:
        rows.append(("gate μ by source at end", ", ".join(by_source)))
    rows += reasoning_summary(m)
    halt = m.last("train", "halt_sum_mean")
    if halt is not None:
        target = m.last("train", "halt_target")
        rows.append(("halt Σ at end", f"{halt:.3f}" + (f" (target {target:.2f})" if target is not None else "")))
    nonfinite = m.last("train", "nonfinite_steps")
    if nonfinite:
        rows.append(("non-finite steps skipped", str(int(nonfinite))))
    return rows


def plot_run(m: RunMetrics, out: Path) -> list[tuple[str, str]]:
    """Write the run's figures into `out`; returns (file name, caption) of each one written."""
    figures: list[tuple[str, str]] = []

    def skipped(panel: str, keys: str) -> None:
        m.notes.append(f"{panel} panel skipped: no {keys} in metrics.jsonl")

    loss_lines = []
    for label, split, keys in (("train", "train", ("loss",)), ("val", "val", VAL_LOSS_KEYS)):
        steps, values = m.series(split, *keys)
        if steps:
            loss_lines.append(Line(label, steps, values, marker="o" if split == "val" else None))
    if loss_lines:
        plot_lines(out / "loss.png", "loss", "cross-entropy", loss_lines)
        figures.append(("loss.png", "Train and validation loss"))
    else:
        skipped("loss", "train loss or val loss")

    steps, lr = m.series("train", "lr")
    if steps:
        plot_lines(out / "lr.png", "learning rate", "lr", [Line("lr", steps, lr)])
        figures.append(("lr.png", "Learning rate"))
    else:
        skipped("learning-rate", "lr")

    gate = _banded(m, "gate_mean", "gate_min", "gate_max", "gate μ")
    if gate is not None:
        lines = [gate]
        s_steps, scale = m.series("train", "gate_scale")
        if s_steps:
            lines.append(Line("gate scale", s_steps, scale, color="gray", style="--"))
        plot_lines(out / "gate.png", "HRM gate μ (effective, with min/max)", "gate", lines)
        figures.append(("gate.png", "Gate μ with its min/max band"))
    else:
        skipped("gate", "gate_mean")
    if gate_sources(m):
        plot_source_gates(m, out / "gate_by_source.png")
        figures.append(("gate_by_source.png", "Gate μ per data source"))
    figures += plot_reasoning(m, out, SOURCE_GATE)
    figures += plot_puzzle(m, out)

    halt = _banded(m, "halt_sum_mean", "halt_sum_min", "halt_sum_max", "halt Σ")
    if halt is not None:
        target = m.last("train", "halt_target")
        if target is None:
            m.notes.append("halt panel has no target line: no halt_target in metrics.jsonl")
        plot_lines(out / "halt.png", "halting: Σ of per-cycle halt probabilities", "halt Σ", [halt],
                   hline=(target, f"target {target:g}") if target is not None else None)
        figures.append(("halt.png", "Halt Σ (mean with min/max band) against its target"))
    else:
        skipped("halt", "halt_sum_mean")

    steps, tps = m.series("train", "tokens_per_s")
    if steps:
        plot_lines(out / "throughput.png", "throughput", "tokens/s", [Line("tokens/s", steps, tps)])
        figures.append(("throughput.png", "Tokens per second"))
    else:
        skipped("throughput", "tokens_per_s")
    return figures


def gate_sources(m: RunMetrics) -> list[str]:
    """The mixture sources whose mean gate the run logged, in first-seen order (none without a mixture)."""
    names = {key[len(SOURCE_GATE):]: None for record in m.train for key in record if key.startswith(SOURCE_GATE)}
    return [name for name in names if m.last("train", SOURCE_GATE + name) is not None]


def plot_source_gates(m: RunMetrics, path: Path) -> None:
    """One curve per data source: where the HRM's gate opens for reasoning tasks and stays shut for prose."""
    lines = [Line(name, *m.series("train", SOURCE_GATE + name)) for name in gate_sources(m)]
    plot_lines(path, "HRM gate μ per data source (effective)", "gate", lines)


def _banded(m: RunMetrics, mean: str, low: str, high: str, label: str) -> Line | None:
    steps, values = m.series("train", mean)
    if not steps:
        return None
    lo_steps, lo = m.series("train", low)
    hi_steps, hi = m.series("train", high)
    if lo_steps == steps and hi_steps == steps:
        return Line(label, steps, values, low=lo, high=hi)
    m.notes.append(f"{label} drawn without a band: {low}/{high} missing on some records")
    return Line(label, steps, values)


def write_run_report(run_dir: Path, out: Path) -> Path:
    """Figures and report.md for the run in `run_dir`, written into `out` (which exists)."""
    metrics = read_metrics(run_dir / METRICS_FILE)
    summary = summarise(metrics)
    figures = plot_run(metrics, out)
    lines = [f"# Run report: {run_dir.resolve().name}", "", f"Source: `{run_dir}`", "",
             "| metric | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in summary), ""]
    for name, caption in figures:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    if metrics.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in metrics.notes), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
