"""PNG figures for run and sweep reports. Figures are drawn on matplotlib's Agg canvas directly
(no pyplot, no global backend state), so reports render on headless nodes and inside Ray jobs."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

KEPT_COLOR, STOPPED_COLOR = "#1f77b4", "#d62728"


@dataclass
class Line:
    """One curve against the step; `low`/`high` draw a shaded band (e.g. min/max over the window)."""

    label: str
    steps: list[float]
    values: list[float]
    low: list[float] | None = None
    high: list[float] | None = None
    color: str | None = None
    style: str = "-"
    marker: str | None = None


def plot_lines(path: Path, title: str, ylabel: str, lines: list[Line], hline: tuple[float, str] | None = None,
               logy: bool = False, xlabel: str = "step") -> None:
    fig = Figure(figsize=(7.5, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for line in lines:
        drawn = ax.plot(line.steps, line.values, line.style, label=line.label, color=line.color,
                        marker=line.marker, markersize=3.5, linewidth=1.6)[0]
        if line.low is not None and line.high is not None:
            ax.fill_between(line.steps, line.low, line.high, color=drawn.get_color(), alpha=0.18,
                            linewidth=0, label=f"{line.label} min/max")
    if hline is not None:
        ax.axhline(hline[0], color="black", linestyle="--", linewidth=1.1, label=hline[1])
    _finish(ax, title, xlabel, ylabel, logy)
    fig.savefig(path)


def plot_trial_curves(path: Path, curves: list[tuple[str, list[float], list[float], bool]]) -> None:
    """curves: (trial, steps, val losses, stopped early). Stopped trials in red, kept ones in blue."""
    fig = Figure(figsize=(7.5, 4.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    labelled: set[bool] = set()
    for _trial, steps, values, stopped in curves:
        label = None if stopped in labelled else ("stopped early" if stopped else "kept (ran to the end)")
        labelled.add(stopped)
        ax.plot(steps, values, "-o", color=STOPPED_COLOR if stopped else KEPT_COLOR, alpha=0.55 if stopped else 0.9,
                markersize=3, linewidth=1.4, label=label)
    _finish(ax, "validation loss per trial", "step", "val loss", logy=False)
    fig.savefig(path)


def plot_params_vs_loss(path: Path, params: dict[str, list[object]], losses: list[float],
                        stopped: list[bool], step: float) -> None:
    """One panel per parameter: its value in each trial against the trial's val loss at `step` (one step
    for every trial, so that a trial stopped early is not compared with one trained longer)."""
    names = list(params)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), dpi=110, layout="constrained")
    colors = [STOPPED_COLOR if s else KEPT_COLOR for s in stopped]
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = params[name]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            xs = [float(v) for v in values]
            ax.scatter(xs, losses, c=colors, s=28, edgecolors="black", linewidths=0.4)
            positive = [x for x in xs if x > 0]
            if len(positive) == len(xs) and min(positive) > 0 and max(positive) / min(positive) >= 20:
                ax.set_xscale("log")
        else:
            categories = sorted({str(v) for v in values})
            xs = [categories.index(str(v)) for v in values]
            ax.scatter(xs, losses, c=colors, s=28, edgecolors="black", linewidths=0.4)
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(name)
        ax.set_ylabel(f"val loss at step {step:g}")
        ax.grid(alpha=0.3)
    fig.suptitle(f"parameters vs validation loss at step {step:g}, the last every trial reached "
                 "(red: stopped early, blue: kept)")
    fig.savefig(path)


def _finish(ax, title: str, xlabel: str, ylabel: str, logy: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)


def plot_panels(path: Path, title: str, panels: list[tuple[str, str, list[Line]]], xlabel: str = "step") -> None:
    """Panels stacked over one shared step axis, each (title, ylabel, lines): curves to read side by side."""
    fig = Figure(figsize=(7.5, 2.9 * len(panels) + 0.6), dpi=110, layout="constrained")
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (panel_title, ylabel, lines) in zip(axes, panels, strict=True):
        for line in lines:
            ax.plot(line.steps, line.values, line.style, label=line.label, color=line.color, marker=line.marker,
                    markersize=3.5, linewidth=1.6)
        _finish(ax, panel_title, xlabel if ax is axes[-1] else "", ylabel, logy=False)
    fig.suptitle(title)
    fig.savefig(path)
