"""Report on a sweep: a results table, validation curves per trial, parameters vs the loss at one step.

Two layouts are read:
- a Ray Tune experiment directory: one folder per trial holding `result.json` (one reported result a
  line), `progress.csv` (the same as a table) and `params.json` (the trial's config). A trial that
  ran fewer steps than the longest one counts as stopped early (ASHA's or patience's decision).
- a `trials.jsonl` the sweep writes: one JSON object a line with `trial_id`, `params` (dict),
  `best_val_loss`, `steps`, `stopped_early`, and optionally `metric`/`mode`/`best_metric` (the sweep's
  ranking metric, e.g. val_exact_accuracy/max for puzzles: trials are ranked by it), `history`
  ([[step, val_loss], ...]) or `path` (the trial folder, absolute or relative to the sweep directory) to
  draw its curve from.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from hrm_ray.errors import UserError
from hrm_ray.report.plots import plot_params_vs_loss, plot_trial_curves
from hrm_ray.report.run_report import number

TRIALS_FILE = "trials.jsonl"
TRIAL_FILES = ("result.json", "progress.csv")
STEP_KEYS = ("step", "training_iteration")


@dataclass
class Trial:
    trial_id: str
    params: dict[str, object]
    curve: list[tuple[float, float]]
    best_val_loss: float | None = None
    steps: int | None = None
    stopped_early: bool | None = None
    metric: str = "val_loss"
    mode: str = "min"
    best_metric: float | None = None

    def ranked_by_loss(self) -> bool:
        return self.metric == "val_loss" or self.best_metric is None

    def rank_key(self) -> tuple[bool, float]:
        """Sort key: best trial first, by the sweep's metric in its direction, else by val loss."""
        value = self.best() if self.ranked_by_loss() else self.best_metric
        sign = -1.0 if self.mode == "max" and not self.ranked_by_loss() else 1.0
        return value is None, sign * (value or 0.0)

    def best(self) -> float | None:
        if self.best_val_loss is not None:
            return self.best_val_loss
        finite = [v for _, v in self.curve if math.isfinite(v)]
        return min(finite) if finite else None

    def steps_run(self) -> int:
        return self.steps if self.steps is not None else int(max((s for s, _ in self.curve), default=0))


def is_sweep_dir(path: Path) -> bool:
    return (path / TRIALS_FILE).is_file() or bool(trial_dirs(path))


def trial_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any((p / f).is_file() for f in TRIAL_FILES))


def flatten(params: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _first(record: dict, keys: tuple[str, ...]) -> float | None:
    return next((number(record[k]) for k in keys if k in record), None)


def _curve(rows: list[dict]) -> list[tuple[float, float]]:
    points: dict[float, float] = {}
    for row in rows:
        step, loss = _first(row, STEP_KEYS), _first(row, ("val_loss",))
        if step is not None and loss is not None:
            points[step] = loss
    return sorted(points.items())


def read_trial_dir(path: Path) -> Trial:
    params: dict[str, object] = {}
    if (path / "params.json").is_file():
        params = flatten(_load_json(path / "params.json"))
    if (path / "result.json").is_file():
        rows = []
        lines = (path / "result.json").read_text().splitlines()
        for i, text in enumerate(lines, start=1):
            if text.strip():
                try:
                    rows.append(json.loads(text))
                except json.JSONDecodeError as exc:
                    if i == len(lines):  # a trial still running, or killed mid-write
                        break
                    raise UserError(f"{path / 'result.json'}:{i}: not a JSON object ({exc.msg})") from exc
        if not params and rows and isinstance(rows[-1].get("config"), dict):
            params = flatten(rows[-1]["config"])
        trial_id = next((str(r["trial_id"]) for r in rows if "trial_id" in r), path.name)
        return Trial(trial_id, params, _curve(rows), steps=_steps(rows))
    with open(path / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not params and rows:
        params = {k.removeprefix("config/"): _parse_cell(v) for k, v in rows[-1].items()
                  if k.startswith("config/")}
    trial_id = next((r["trial_id"] for r in rows if r.get("trial_id")), path.name)
    return Trial(trial_id, params, _curve(rows), steps=_steps(rows))


def _steps(rows: list[dict]) -> int | None:
    steps = [s for s in (_first(r, STEP_KEYS) for r in rows) if s is not None]
    return int(max(steps)) if steps else None


def _parse_cell(text: str) -> object:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return text


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def read_trials_file(sweep_dir: Path) -> list[Trial]:
    path = sweep_dir / TRIALS_FILE
    trials = []
    for i, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{i}: not a JSON object ({exc.msg})") from exc
        trial_id = record.get("trial_id", record.get("trial"))
        if trial_id is None:
            raise UserError(f"{path}:{i}: missing field 'trial_id'")
        params = record.get("params", record.get("config", {}))
        if not isinstance(params, dict):
            raise UserError(f"{path}:{i}: field 'params' must be an object")
        curve = [(float(s), float(v)) for s, v in record.get("history", [])]
        if not curve and record.get("path"):
            folder = Path(record["path"])
            folder = folder if folder.is_absolute() else sweep_dir / folder
            if folder.is_dir() and any((folder / f).is_file() for f in TRIAL_FILES):
                curve = read_trial_dir(folder).curve
        stopped = record.get("stopped_early")
        trials.append(Trial(str(trial_id), flatten(params), curve, number(record.get("best_val_loss")),
                            int(record["steps"]) if number(record.get("steps")) is not None else None,
                            None if stopped is None else bool(stopped), str(record.get("metric", "val_loss")),
                            str(record.get("mode", "min")), number(record.get("best_metric"))))
    return trials


def load_trials(sweep_dir: Path) -> list[Trial]:
    trials = read_trials_file(sweep_dir) if (sweep_dir / TRIALS_FILE).is_file() else \
        [read_trial_dir(p) for p in trial_dirs(sweep_dir)]
    if not trials:
        raise UserError(f"{sweep_dir}: the sweep has no trials")
    longest = max(t.steps_run() for t in trials)
    for t in trials:
        if t.stopped_early is None:
            t.stopped_early = t.steps_run() < longest
    return trials


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def common_step(trials: list[Trial]) -> float:
    """The last evaluated step every trial reached (the earliest of their last steps)."""
    return min(t.curve[-1][0] for t in trials)


def loss_at(trial: Trial, step: float) -> float:
    """The trial's validation loss at its last evaluation at or before `step` (its first one if none is)."""
    before = [v for s, v in trial.curve if s <= step]
    return before[-1] if before else trial.curve[0][1]


def write_sweep_report(sweep_dir: Path, out: Path) -> Path:
    trials = sorted(load_trials(sweep_dir), key=Trial.rank_key)
    by_metric = [t for t in trials if not t.ranked_by_loss()]
    metric = by_metric[0].metric if by_metric else None
    notes: list[str] = []
    names = sorted({k for t in trials for k in t.params})
    varying = [n for n in names if len({_fmt(t.params.get(n)) for t in trials}) > 1]
    figures: list[tuple[str, str]] = []

    curves = [(t.trial_id, [s for s, _ in t.curve], [v for _, v in t.curve], bool(t.stopped_early))
              for t in trials if t.curve]
    if curves:
        plot_trial_curves(out / "val_loss_trials.png", curves)
        figures.append(("val_loss_trials.png", "Validation loss per trial (red: stopped early, blue: kept)"))
    else:
        notes.append("validation-curve panel skipped: no trial reported val_loss with a step")

    scored = [t for t in trials if t.best() is not None]
    curved = [t for t in scored if t.curve]
    plotted = [n for n in varying if all(n in t.params for t in curved)]
    if curved and plotted:
        step = common_step(curved)
        plot_params_vs_loss(out / "params_vs_loss.png", {n: [t.params[n] for t in curved] for n in plotted},
                            [loss_at(t, step) for t in curved], [bool(t.stopped_early) for t in curved], step)
        figures.append(("params_vs_loss.png", f"Parameters vs validation loss at step {step:g}, the last step "
                                              "every trial reached"))
    else:
        notes.append("parameter panel skipped: " + ("no trial has a validation curve" if not curved
                                                    else "no parameter varies across the trials"))
    constant = [n for n in names if n not in varying]
    if constant:
        notes.append("same in every trial (not plotted): " + ", ".join(
            f"{n}={_fmt(trials[0].params.get(n))}" for n in constant))

    stopped = sum(bool(t.stopped_early) for t in trials)
    used, full = sum(t.steps_run() for t in trials), max(t.steps_run() for t in trials) * len(trials)
    lines = [f"# Sweep report: {sweep_dir.resolve().name}", "", f"Source: `{sweep_dir}`", "",
             f"- trials: {len(trials)} ({stopped} stopped early, {len(trials) - stopped} kept)",
             f"- trial-steps run: {used} of {full} if every trial ran to the end ({100 * used / max(full, 1):.0f}%)"]
    if metric and by_metric:
        best = by_metric[0]
        lines.append(f"- best by {metric} ({best.mode}): trial `{best.trial_id}`, {metric} {best.best_metric:.4f}, "
                     + ", ".join(f"{n}={_fmt(best.params.get(n))}" for n in varying))
    elif scored:
        best = scored[0]
        lines.append(f"- best: trial `{best.trial_id}`, val loss {best.best():.4f}, "
                     + ", ".join(f"{n}={_fmt(best.params.get(n))}" for n in varying))
    header = ["trial", *varying, *([f"best {metric}"] if metric else []), "best val loss", "steps run", "stopped early"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for t in trials:
        best_loss = t.best()
        ranked = [] if not metric else [f"{t.best_metric:.4f}" if t.best_metric is not None else "n/a"]
        cells = [f"`{t.trial_id}`", *(_fmt(t.params.get(n, "")) for n in varying), *ranked,
                 f"{best_loss:.4f}" if best_loss is not None else "n/a", str(t.steps_run()),
                 "yes" if t.stopped_early else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, caption in figures:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
