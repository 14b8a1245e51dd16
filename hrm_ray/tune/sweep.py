"""Sweeps over the HRM knobs with Ray Tune and ASHA: a trial is one Ray Train run (Train V2 pattern).

    Tuner(run_trial,                                   # the trial's driver function
          param_space={"model.bridge.gate_init_bias": uniform, "model.hrm.halting_weight": loguniform,
                       "train.hrm_gate_warmup_steps": choice, ["optim.learning_rate": loguniform]},
          TuneConfig(ASHAScheduler(metric="val_loss", mode="min", time_attr="step", max_t=steps, ...),
                     num_samples, max_concurrent_trials),
          RunConfig(storage_path, name))
    run_trial(params) -> train(base config + params, callbacks=[TuneReportCallback()])
                      -> TorchTrainer(RunConfig(callbacks=[TuneReportCallback()]))

Every evaluation's `{"step", "val_loss", ...}` reaches Tune through the callback, so ASHA can stop a
weak trial at each rung. A trial's Train run lives in `<sweep>/runs/<trial_id>/` (metrics.jsonl,
checkpoints, best-model/). Rerunning an interrupted sweep restores it (`Tuner.restore`): finished trials
stay finished, unfinished ones restart and their Train run resumes from its own last checkpoint.

Trials are ranked by the sweep's `metric` and `mode` (val_loss/min for the LM stages, the task's selection
metric such as val_exact_accuracy/max for puzzles): ASHA's rungs, the best trial and best_config.yaml.

Outputs in `<sweep>/`: trials.jsonl (one trial a line: trial_id, params, best_val_loss, steps,
stopped_early, history of val_loss, metric, best_metric), best_config.yaml (a full config `experiments/stage_b.py --config` accepts),
report/ (plots and report.md by `hrm_ray.report`), sweep.json (the settings a restore reuses).
"""
from __future__ import annotations

import abc
import importlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hrm_ray.config import Config, from_dict, set_value, to_dict, validate
from hrm_ray.errors import UserError
from hrm_ray.train.run_files import RunFiles, is_remote, join

METRIC, MODE, TIME_ATTR = "val_loss", "min", "step"
RUNS_DIR = "runs"
TRIALS_FILE = "trials.jsonl"
BEST_CONFIG_FILE = "best_config.yaml"
SWEEP_FILE = "sweep.json"
TRIAL_DRIVER_CPUS = 0.01  # the driver only waits on its TorchTrainer, whose workers hold the real resources

GATE_INIT_BIAS = "model.bridge.gate_init_bias"
HALTING_WEIGHT = "model.hrm.halting_weight"
GATE_WARMUP = "train.hrm_gate_warmup_steps"
LEARNING_RATE = "optim.learning_rate"


@dataclass(frozen=True)
class Dimension:
    """One knob of a search space: config `path`, sampled `kind` (uniform | loguniform | choice) over
    `values` (LOW, HIGH or the choices); `flag` names it in errors; `min_value` bounds choices."""
    flag: str
    path: str
    kind: str
    values: tuple
    min_value: float | None = None

    def check(self) -> None:
        if self.kind == "choice":
            if not self.values or (self.min_value is not None and min(self.values) < self.min_value):
                raise UserError(f"--{self.flag}: expected choices >= {self.min_value}, got {self.values}")
            return
        low, high = self.values
        if not low < high:
            raise UserError(f"--{self.flag}: expected LOW,HIGH with LOW < HIGH, got {self.values}")
        if self.kind == "loguniform" and low <= 0:
            raise UserError(f"--{self.flag}: a log-uniform range needs LOW > 0, got {self.values}")

    def domain(self) -> Any:
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        return (tune.loguniform if self.kind == "loguniform" else tune.uniform)(*self.values)

    def draw(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(list(self.values))
        if self.kind == "loguniform":
            return math.exp(rng.uniform(*map(math.log, self.values)))
        return rng.uniform(*self.values)


class KnobSpace(abc.ABC):
    """A search space made of `dimensions()`: checking, Tune's param_space and seeded samples."""

    @abc.abstractmethod
    def dimensions(self) -> list[Dimension]:
        """The knobs this space samples (those with a range)."""

    def resolved(self, steps: int) -> KnobSpace:
        return self

    def check(self) -> None:
        for dimension in self.dimensions():
            dimension.check()

    def tune_space(self) -> dict[str, Any]:
        space = {d.path: d.domain() for d in self.dimensions()}
        if not space:
            raise UserError("the search space is empty: give at least one --search_* range")
        return space

    def sample(self, count: int, seed: int) -> list[dict[str, Any]]:
        """`count` points drawn from the space with a seed (the same points for two sweeps to compare)."""
        rng = random.Random(seed)
        return [{d.path: d.draw(rng) for d in self.dimensions()} for _ in range(count)]


@dataclass
class SearchSpace(KnobSpace):
    """Stage B's knobs; None leaves a knob at the base config's value."""
    gate_init_bias: tuple[float, float] | None = (-3.5, -1.0)
    halting_weight: tuple[float, float] | None = (1e-3, 0.2)
    gate_warmup_steps: tuple[int, ...] | None = None  # None: 0, steps/8, steps/4, steps/2
    learning_rate: tuple[float, float] | None = None

    def resolved(self, steps: int) -> SearchSpace:
        warmup = self.gate_warmup_steps
        if warmup is None:
            warmup = tuple(sorted({0, steps // 8, steps // 4, steps // 2}))
        return SearchSpace(self.gate_init_bias, self.halting_weight, warmup, self.learning_rate)

    def dimensions(self) -> list[Dimension]:
        knobs = [
            Dimension("search_gate_init_bias", GATE_INIT_BIAS, "uniform", self.gate_init_bias),
            Dimension("search_halting_weight", HALTING_WEIGHT, "loguniform", self.halting_weight),
            Dimension("search_gate_warmup", GATE_WARMUP, "choice", self.gate_warmup_steps, min_value=0),
            Dimension("search_learning_rate", LEARNING_RATE, "loguniform", self.learning_rate),
        ]
        return [d for d in knobs if d.values is not None]


@dataclass
class SweepSpec:
    base: dict[str, Any]            # the full config tree every trial starts from (to_dict(Config))
    name: str
    storage: str                    # the sweep lives in <storage>/<name>/
    space: KnobSpace = field(default_factory=SearchSpace)
    num_samples: int = 8
    max_concurrent_trials: int = 0  # 0: as many as the cluster's resources allow
    grace_period: int = 0           # steps before ASHA's first cut; 0: steps / reduction_factor**2
    reduction_factor: int = 3
    scheduler: str = "asha"         # asha | fifo (every trial runs to max_t)
    seed: int = 0
    points: list[dict[str, Any]] | None = None  # explicit trial configs to run (num_samples of them)
    metric: str = METRIC            # what ASHA compares at each rung (e.g. val_exact_accuracy for puzzles)
    mode: str = MODE                # min | max

    @property
    def path(self) -> str:
        return join(self.storage, self.name)

    @property
    def max_t(self) -> int:
        return int(self.base["train"]["steps"])

    def check(self) -> None:
        if self.max_t <= 0:
            raise UserError("--steps: a sweep needs a step budget (max_t for ASHA), got 0")
        if self.num_samples < 1:
            raise UserError(f"--num_samples must be >= 1, got {self.num_samples}")
        if self.max_concurrent_trials < 0:
            raise UserError(f"--max_concurrent_trials must be >= 0, got {self.max_concurrent_trials}")
        if self.reduction_factor < 2:
            raise UserError(f"--reduction_factor must be >= 2, got {self.reduction_factor}")
        if not 0 <= self.grace_period <= self.max_t:
            raise UserError(f"--grace_period must be in [0, --steps={self.max_t}], got {self.grace_period}")
        if self.scheduler not in ("asha", "fifo"):
            raise UserError(f"--scheduler must be asha or fifo, got {self.scheduler!r}")
        if int(self.base["ray"]["num_workers"]) < 1:
            raise UserError("--num_workers: a sweep trial needs >= 1 Ray Train worker (local mode, num_workers 0, "
                            "does not report to Tune)")
        self.space.check()

    def grace(self) -> int:
        val_every = int(self.base["train"]["val_every"])
        grace = self.grace_period or max(1, self.max_t // self.reduction_factor ** 2)
        return min(self.max_t, max(grace, val_every))


@dataclass
class TrialRow:
    trial_id: str
    params: dict[str, Any]
    best_val_loss: float | None
    steps: int              # optimizer steps its Train run took (it may run on a little after its last report)
    stopped_early: bool     # its reports ended before max_t: ASHA (or patience) stopped it
    status: str
    history: list[list[float]]   # [[step, val_loss], ...]
    path: str = ""
    error: str = ""
    metric: str = METRIC         # the sweep's ranking metric, its direction, and this trial's best value of it
    mode: str = MODE
    best_metric: float | None = None


@dataclass
class SweepResult:
    path: str
    rows: list[TrialRow]
    best: TrialRow | None
    best_config: str
    report: str = ""
    restored: bool = False
    interrupted: bool = False  # stopped before every trial finished: rerun to continue
    mode: str = MODE           # the sweep's ranking direction (its rows carry the metric)


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> Config:
    cfg = from_dict(base)
    for path, value in params.items():
        set_value(cfg, path, value, f"search space {path}")
    return validate(cfg)


def run_trial(params: dict[str, Any], base: dict[str, Any], runs_dir: str, metric: str = METRIC) -> None:
    """Tune's trial driver: one Ray Train run whose evaluations reach Tune through TuneReportCallback."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from hrm_ray.train.ray_trainer import train

    cfg = trial_config(base, params)
    cfg.train.run_name = ray.tune.get_context().get_trial_id()
    cfg.ray.storage_path = runs_dir
    result = train(cfg, callbacks=[TuneReportCallback()])
    if result.already_done:  # finished before an interruption that Tune had not recorded yet
        ray.tune.report(finished_report(result, metric))


def finished_report(result, metric: str) -> dict[str, float]:
    """What a trial whose run had already finished reports: its best values (from the run's checkpoint),
    under the sweep's metric too (val_loss, or val_<the task's selection metric>)."""
    best = {f"val_{result.selection_metric}": result.best_metric, "val_loss": result.best_val_loss}
    if metric not in best:
        raise UserError(f"sweep metric '{metric}': a finished trial knows only its best {', '.join(best)}")
    return {TIME_ATTR: result.step, **best, "best_val_loss": result.best_val_loss}


def _save_spec(spec: SweepSpec) -> None:
    RunFiles(spec.path).write_bytes(SWEEP_FILE, json.dumps(_comparable(spec), indent=2).encode())


def load_spec(path: str) -> SweepSpec:
    """The settings a sweep was started with; its search space rebuilt as the class it was (LM or puzzle)."""
    data = json.loads(Path(path, SWEEP_FILE).read_text())
    space = data.pop("space")
    module, _, name = data.pop("space_class", f"{__name__}:SearchSpace").partition(":")
    space_class = getattr(importlib.import_module(module), name)
    space = space_class(**{k: tuple(v) if v is not None else None for k, v in space.items()})
    return SweepSpec(space=space, **data)


def build_tuner(spec: SweepSpec, restore: bool):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=spec.base, runs_dir=join(spec.path, RUNS_DIR), metric=spec.metric),
        {"CPU": TRIAL_DRIVER_CPUS})
    if restore:
        return tune.Tuner.restore(spec.path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    if spec.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr=TIME_ATTR, max_t=spec.max_t, grace_period=spec.grace(),
                                  reduction_factor=spec.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    searcher = BasicVariantGenerator(points_to_evaluate=spec.points, random_state=spec.seed,
                                     max_concurrent=spec.max_concurrent_trials)  # TuneConfig's would be ignored
    return tune.Tuner(
        trainable,
        param_space=spec.space.tune_space(),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler, search_alg=searcher,
                                    num_samples=spec.num_samples),
        run_config=tune.RunConfig(storage_path=spec.storage, name=spec.name, verbose=1),
    )


def start_ray(spec: SweepSpec) -> None:
    """Attach to `--address`/`$RAY_ADDRESS`, else start a local Ray *with* its dashboard: ASHA kills the
    trials it stops, and only through the dashboard's state API can Ray Train's PlacementGroupCleaner
    see that their controllers died and free their workers' CPUs for the next trials."""
    from hrm_ray.data.ray_env import ensure_ray, local_cpus

    per_trial = max(1, int(spec.base["ray"]["num_workers"])) * float(spec.base["ray"]["cpus_per_worker"])
    ensure_ray(spec.base["ray"]["address"] or None, num_cpus=local_cpus(per_trial * max(1, spec.max_concurrent_trials)),
               dashboard=True)


def run_sweep(spec: SweepSpec, log: Callable[[str], None] = print, report: bool = True) -> SweepResult:
    """Run the sweep, or continue it when `<storage>/<name>/` holds an interrupted one."""
    from ray import tune

    requested = spec
    restored = tune.Tuner.can_restore(spec.path)
    if restored:
        stored = load_spec(spec.path)
        if _comparable(stored) != _comparable(spec):
            log(f"[yellow]sweep {spec.path} exists: continuing it with its original settings "
                f"({SWEEP_FILE}); pick another --name for a new sweep[/yellow]")
        spec = stored
        log(f"resuming sweep {spec.path}")
    else:
        spec.check()
        if spec.points is not None and len(spec.points) != spec.num_samples:
            raise UserError(f"{len(spec.points)} explicit trial configs but --num_samples {spec.num_samples}")
        _save_spec(spec)
        log(f"sweep {spec.path}: {spec.num_samples} trials, {spec.scheduler} (max_t {spec.max_t} steps"
            + (f", grace {spec.grace()}, reduction factor {spec.reduction_factor})" if spec.scheduler == "asha" else ")"))
    start_ray(requested)  # after the checks: a bad setting never waits for Ray to start
    grid = build_tuner(spec, restored).fit()
    rows = trial_rows(grid, spec)
    best = best_row(rows, spec.mode)
    if any(r.status == "UNFINISHED" for r in rows):
        log(f"[yellow]sweep interrupted: {sum(r.status == 'UNFINISHED' for r in rows)} of {len(rows)} trials "
            f"unfinished; rerun the same command to continue it[/yellow]")
        return SweepResult(spec.path, rows, best, "", restored=restored, interrupted=True, mode=spec.mode)
    files = RunFiles(spec.path)
    files.write_bytes(TRIALS_FILE, "".join(json.dumps(asdict(r)) + "\n" for r in rows).encode())
    best_config = ""
    if best is not None:
        files.write_bytes(BEST_CONFIG_FILE, best_config_yaml(spec, best).encode())
        best_config = files.path(BEST_CONFIG_FILE)
    result = SweepResult(spec.path, rows, best, best_config, restored=restored, mode=spec.mode)
    if report and not is_remote(spec.path) and rows:
        from hrm_ray.report.build import build_report

        result.report = str(build_report(spec.path))
    return result


def _comparable(spec: SweepSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["space"] = {k: list(v) if v is not None else None for k, v in data["space"].items()}
    data["space_class"] = f"{type(spec.space).__module__}:{type(spec.space).__qualname__}"
    return json.loads(json.dumps(data))


def trial_rows(grid, spec: SweepSpec) -> list[TrialRow]:
    rows = []
    for result in grid:
        config = dict(result.config or {})
        last = result.metrics or {}
        trial_id = str(last.get("trial_id") or Path(result.path).name)
        frame = result.metrics_dataframe
        history = _curve(frame, METRIC)
        ranked = history if spec.metric == METRIC else _curve(frame, spec.metric)
        losses = [v for _, v in history if math.isfinite(v)]
        values = [v for _, v in ranked if math.isfinite(v)]
        reported = max([int(s) for s, _ in history + ranked], default=0)
        rows.append(TrialRow(
            trial_id=trial_id, params=config, best_val_loss=min(losses) if losses else None,
            steps=max(reported, _steps_trained(spec, trial_id)), stopped_early=reported < spec.max_t,
            status=_status(result, last), history=history, path=_relative(result.path, spec.path),
            error=_last_line(result.error), metric=spec.metric, mode=spec.mode,
            best_metric=(max if spec.mode == "max" else min)(values) if values else None))
    return sorted(rows, key=lambda r: r.trial_id)


def _curve(frame, metric: str) -> list[list[float]]:
    """[[step, value], ...] of one reported metric (rows without it skipped)."""
    if frame is None or metric not in frame or TIME_ATTR not in frame:
        return []
    return [[float(s), float(v)] for s, v in zip(frame[TIME_ATTR], frame[metric], strict=True)
            if not (math.isnan(float(s)) or math.isnan(float(v)))]


def _last_line(error: BaseException | None) -> str:
    """A trial's error in one line: the UserError's message when it is one, else the last line of its text."""
    from hrm_ray.data.ray_errors import find_user_error

    user_error = find_user_error(error)
    lines = [x.strip() for x in str(user_error or error or "").splitlines() if x.strip()]
    text = " ".join(lines) if user_error is not None else (lines[-1] if lines else "")
    return text[:300]


def _status(result, last: dict[str, Any]) -> str:
    """ERROR, TERMINATED (ran to the end, or stopped by the scheduler: Tune marks both done) or UNFINISHED."""
    if result.error:
        return "ERROR"
    return "TERMINATED" if last.get("done") else "UNFINISHED"


def _steps_trained(spec: SweepSpec, trial_id: str) -> int:
    """Optimizer steps the trial's Train run actually took (it may go on a little after its last report)."""
    run_dir = join(spec.path, RUNS_DIR, trial_id)
    metrics = Path(run_dir, "metrics.jsonl")
    if is_remote(run_dir) or not metrics.is_file():
        return 0
    steps = 0
    for line in metrics.read_text().splitlines():
        try:
            steps = max(steps, int(json.loads(line).get("step", 0)))
        except (json.JSONDecodeError, TypeError, ValueError):
            continue
    return steps


def _relative(path: str, root: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def best_row(rows: list[TrialRow], mode: str = MODE) -> TrialRow | None:
    """The trial with the best `best_metric` (lowest under mode min, highest under max)."""
    scored = [r for r in rows if r.best_metric is not None]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r.best_metric)


def best_config_yaml(spec: SweepSpec, best: TrialRow) -> str:
    """The base config with the best trial's parameters, as a full YAML a stage script accepts."""
    cfg = trial_config(spec.base, {k: v for k, v in best.params.items()})
    cfg.train.run_name = f"{spec.name}-best"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best.params.items()))
    header = (f"# Best trial of sweep '{spec.name}': {best.trial_id}, {_metric_text(best)} after "
              f"{best.steps} steps\n# {params}\n"
              f"# python experiments/stage_b.py --config {BEST_CONFIG_FILE} --steps N   (any flag overrides)\n")
    return header + yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _metric_text(row: TrialRow) -> str:
    """'val loss 1.2345' (as the LM sweeps always printed it), or e.g. 'val_exact_accuracy 0.8125'."""
    name = "val loss" if row.metric == METRIC else row.metric
    return f"{name} {row.best_metric:.4f}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def results_table(result: SweepResult):
    """A rich table: trial, params, best of the ranking metric (when it is not the val loss), best val
    loss, steps run, stopped early; best trials first."""
    from rich.table import Table

    names = sorted({k for r in result.rows for k in r.params})
    metrics = sorted({r.metric for r in result.rows} - {METRIC})
    table = Table(title=f"sweep {result.path}")
    for column in ["trial", *(n.rsplit(".", 1)[-1] for n in names), *(f"best {m}" for m in metrics),
                   "best val loss", "steps", "stopped early"]:
        table.add_column(column)
    sign = -1.0 if result.mode == "max" else 1.0
    for row in sorted(result.rows, key=lambda r: (r.best_metric is None, sign * (r.best_metric or 0.0))):
        mark = " *" if result.best is row else ""
        ranked = [_number(row.best_metric) for _ in metrics]
        table.add_row(row.trial_id + mark, *(_fmt(row.params.get(n, "")) for n in names), *ranked,
                      _number(row.best_val_loss), str(row.steps),
                      "error" if row.status == "ERROR" else ("yes" if row.stopped_early else "no"))
    return table


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
