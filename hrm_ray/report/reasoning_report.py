"""The part of a run report that watches reasoning while the HRM gate opens: validation loss per data source
of a mixture (val records' `<source>/loss`), task metrics (eval records' `<task>/<metric>`, fractions) and
the gate μ per source (train records' `gate_src_<source>`), stacked against one step axis in reasoning.png."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hrm_ray.report.plots import Line, plot_panels

if TYPE_CHECKING:
    from hrm_ray.report.run_report import RunMetrics

FIGURE = "reasoning.png"
CAPTION = "Validation loss per source, task metrics and gate μ per source"


def source_names(records: list[dict], suffix: str = "/loss") -> list[str]:
    """The prefixes of `<prefix><suffix>` keys of `records`, in first-seen order."""
    names = {key[:-len(suffix)]: None for r in records for key in r if key.endswith(suffix) and "/" in key[:-1]}
    return list(names)


def task_metric_names(m: RunMetrics) -> list[str]:
    return list({key: None for r in m.eval for key in r if "/" in key})


def reasoning_panels(m: RunMetrics, gate_prefix: str) -> list[tuple[str, str, list[Line]]]:
    """The panels there is data for: per-source val loss (the whole mix dashed), task metrics, gate μ per source."""
    panels = []
    sources = source_names(m.val)
    if sources:
        lines = [Line(name, *m.series("val", f"{name}/loss"), marker="o") for name in sources]
        lines.append(Line("whole mix", *m.series("val", "loss", "val_loss"), color="gray", style="--"))
        panels.append(("validation loss per source", "cross-entropy", lines))
    tasks = task_metric_names(m)
    if tasks:
        panels.append(("task metrics", "fraction", [Line(name, *m.series("eval", name), marker="o") for name in tasks]))
    gates = list({key[len(gate_prefix):]: None for r in m.train for key in r if key.startswith(gate_prefix)})
    if gates and panels:
        panels.append(("gate μ per source (effective)", "gate",
                       [Line(name, *m.series("train", gate_prefix + name)) for name in gates]))
    return panels


def plot_reasoning(m: RunMetrics, out: Path, gate_prefix: str) -> list[tuple[str, str]]:
    """reasoning.png when the run has per-source validation or task metrics; its (file, caption), else []."""
    panels = reasoning_panels(m, gate_prefix)
    if not panels:
        return []
    plot_panels(out / FIGURE, "watching reasoning while the gate opens", panels)
    return [(FIGURE, CAPTION)]


def reasoning_summary(m: RunMetrics) -> list[tuple[str, str]]:
    """Summary rows: each source's final validation loss; each task metric's final and best value."""
    rows = []
    finals = [(name, m.last("val", f"{name}/loss")) for name in source_names(m.val)]
    finals = [f"{name} {value:.4f}" for name, value in finals if value is not None]
    if finals:
        rows.append(("final val loss by source", ", ".join(finals)))
    for name in task_metric_names(m):
        steps, values = m.series("eval", name)
        if values:
            best, at = max(zip(values, steps, strict=True))
            rows.append((name, f"{values[-1]:.4f} at step {int(steps[-1])} (best {best:.4f} at step {int(at)})"))
    return rows
