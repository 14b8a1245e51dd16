"""The puzzle panels of a run report: accuracy, exact accuracy and q-halt accuracy, ACT steps, and the gated
variant's H/L gates (mean and saturation), from the keys the puzzle task logs (hrm_ray.train.puzzle_task:
train lines carry accuracy/exact_accuracy/q_halt_accuracy/steps/epoch and gate_{H,L}_{mean,sat_low,sat_high};
val lines accuracy/exact_accuracy/q_halt_accuracy/steps)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hrm_ray.report.plots import Line, plot_lines

if TYPE_CHECKING:
    from hrm_ray.report.run_report import RunMetrics

ACCURACY_KEYS = (("accuracy", "accuracy"), ("exact_accuracy", "exact accuracy"), ("q_halt_accuracy", "q-halt accuracy"))
GATE_LEVELS = ("H", "L")


def _lines(m: RunMetrics, split: str, keys: tuple[tuple[str, str], ...], marker: str | None = None) -> list[Line]:
    out = []
    for key, label in keys:
        steps, values = m.series(split, key)
        if steps:
            out.append(Line(f"{split} {label}", steps, values, marker=marker, style="-" if split == "train" else "--"))
    return out


def plot_puzzle(m: RunMetrics, out: Path) -> list[tuple[str, str]]:
    """Write the puzzle figures a run's metrics have; (file name, caption) of each one written."""
    figures = []
    accuracy = _lines(m, "train", ACCURACY_KEYS) + _lines(m, "val", ACCURACY_KEYS, marker="o")
    if accuracy:
        plot_lines(out / "accuracy.png", "puzzle accuracy (train: halted sequences of each window)", "accuracy",
                   accuracy)
        figures.append(("accuracy.png", "Accuracy, exact accuracy and q-halt accuracy"))
    steps = _lines(m, "train", (("steps", "ACT steps"),)) + _lines(m, "val", (("steps", "ACT steps"),), "o")
    if steps:
        plot_lines(out / "act_steps.png", "ACT steps per halted sequence", "steps", steps)
        figures.append(("act_steps.png", "ACT steps"))
    gates = []
    for level in GATE_LEVELS:
        for suffix, style in (("mean", "-"), ("sat_low", ":"), ("sat_high", "--")):
            s, v = m.series("train", f"gate_{level}_{suffix}")
            if s:
                gates.append(Line(f"{level} gate {suffix.replace('_', ' ')}", s, v, style=style))
    if gates:
        plot_lines(out / "puzzle_gates.png", "gated HRM: gate μ and saturation (share < 0.1, > 0.9)", "gate",
                   gates)
        figures.append(("puzzle_gates.png", "H and L gate μ and saturation"))
    return figures
