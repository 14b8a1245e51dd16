"""Exact accuracy against test-time depth: trained puzzle runs (e.g. an HRM and a TRM) evaluated with
halt_max_steps = each of `depths` (the weights unchanged), with and without Sudoku voting over views."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hrm_ray.infer.loading import resolve_checkpoint
from hrm_ray.infer.puzzle_eval import evaluate_puzzle_run, model_config
from hrm_ray.report.plots import Line, plot_lines

DEPTH_FIGURE = "depth.png"


def depth_curve(model_dir: Path, depths: Sequence[int], vote: int = 0, max_examples: int = 0,
                batch_size: int = 256, device: str = "cpu", split: str = "test") -> list[dict[str, float]]:
    """One row per depth on `split`: depth, exact accuracy, and (vote > 0) the voted exact accuracy."""
    rows = []
    for depth in depths:
        m = evaluate_puzzle_run(model_dir, split=split, batch_size=batch_size, max_examples=max_examples,
                                device=device, depth={"halt_max_steps": depth}, vote=vote)
        rows.append({"depth": float(depth), "exact_accuracy": m["exact_accuracy"], "examples": m["examples"],
                     **({"vote_exact_accuracy": m["vote_exact_accuracy"]} if vote else {})})
    return rows


def write_depth_report(paths: Sequence[str | Path], out: Path, depths: Sequence[int], vote: int = 0,
                       max_examples: int = 0, batch_size: int = 256, device: str = "cpu") -> Path:
    """depth.png and report.md in `out` for the runs (or best-model/ / checkpoint directories) `paths`."""
    lines, table = [], []
    for path in paths:
        model_dir = resolve_checkpoint(path)
        cfg = model_config(model_dir)
        label = f"{Path(str(path)).name} ({cfg.model.name}, trained at {cfg.model.halt_max_steps})"
        rows = depth_curve(model_dir, depths, vote, max_examples, batch_size, device)
        xs = [r["depth"] for r in rows]
        lines.append(Line(label, xs, [100 * r["exact_accuracy"] for r in rows], marker="o"))
        if vote:
            lines.append(Line(f"{label}, voted over {vote} views", xs, [100 * r["vote_exact_accuracy"] for r in rows],
                              style="--", marker="s"))
        for r in rows:
            voted = f" | {100 * r['vote_exact_accuracy']:.1f}%" if vote else ""
            table.append(f"| {label} | {int(r['depth'])} | {100 * r['exact_accuracy']:.1f}%{voted} |")
    plot_lines(out / DEPTH_FIGURE, "Exact accuracy against test-time depth", "exact accuracy (%)", lines,
               xlabel="halt_max_steps at evaluation")
    head = "| run | depth | exact accuracy" + (f" | voted ({vote} views) |" if vote else " |")
    rule = "|---|---|---" + ("|---|" if vote else "|")
    report = out / "report.md"
    report.write_text("\n".join(["# Exact accuracy against depth", "", f"![depth]({DEPTH_FIGURE})", "", head, rule,
                                 *table, ""]))
    return report
