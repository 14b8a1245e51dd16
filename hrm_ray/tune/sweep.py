"""One sweep mechanism for every model family: Ray Tune over Ray Train trials (Train V2 pattern).

    Tuner(run_trial,                                     # the trial's driver function
          param_space=<the config's `tune:` search space>,   # hrm_ray.tune.space
          TuneConfig(metric, mode,                       # from the task: val_loss/min (LM), val_exact_accuracy/max (puzzles)
                     ASHAScheduler(time_attr="step", max_t, grace_period, reduction_factor) | FIFO,
                     num_samples, max_concurrent_trials),
          RunConfig(storage_path, name))
    run_trial(params) -> train(base config + params, callbacks=[TuneReportCallback()])
                      -> TorchTrainer(RunConfig(callbacks=[TuneReportCallback()]))

A `SweepSpec` comes from a Config (`SweepSpec.from_config`): its `tune` section (space and scheduler
settings) over the rest of it, every trial's base. Every evaluation's `{"step", "val_loss", ...}` reaches
Tune through the callback, so ASHA can stop a weak trial at each rung. A trial's Train run lives in
`<sweep>/runs/<trial_id>/` (metrics.jsonl, checkpoints, best-model/). Rerunning an interrupted sweep
restores it (`Tuner.restore`): finished trials stay finished, unfinished ones restart and their Train run
resumes from its own last checkpoint.

Outputs in `<sweep>/`: trials.jsonl (one trial a line: trial_id, params, best_val_loss, steps,
stopped_early, history of val_loss from its run's metrics.jsonl, metric, mode, best_metric, start: its
initial values and gates at step 0), asha_state.jsonl (ASHA's rungs, restored with the sweep), best_config.yaml (a full config that
`hrm-ray train --config` and the experiment scripts accept), report/ (plots and report.md by
`hrm_ray.report`), sweep.json (the settings a restore reuses).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hrm_ray import storage
from hrm_ray.config import (
    Config,
    from_dict,
    init_value_paths,
    leaf_paths,
    set_value,
    suggest,
    to_dict,
    validate,
)
from hrm_ray.errors import UserError
from hrm_ray.models import registry
from hrm_ray.storage import adopt_store_env, is_remote, join, ray_storage, store_env
from hrm_ray.train.resources import Fit
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.run_plan import worker_group
from hrm_ray.tune.history import run_curve, run_records
from hrm_ray.tune.space import Knob, SearchSpace

METRIC, MODE, TIME_ATTR = "val_loss", "min", "step"
RUNS_DIR = "runs"
TRIALS_FILE = "trials.jsonl"
BEST_CONFIG_FILE = "best_config.yaml"
SWEEP_FILE = "sweep.json"
TRIAL_DRIVER_CPUS = 0.01  # the driver only waits on its TorchTrainer, whose workers hold the real resources


def sweep_metric(task: str) -> tuple[str, str]:
    """(metric, mode) trials are ranked by: the validation metric the task selects its best model by
    (val_loss/min for the LM, val_exact_accuracy/max for puzzles), known without building the task."""
    from hrm_ray.train.task import selection
    from hrm_ray.train.task_registry import TASKS

    chosen = selection(TASKS[task])
    return f"val_{chosen.metric}", chosen.mode


def with_step_budget(cfg: Config) -> Config:
    """`cfg` with `train.steps` and `train.val_every` as its task resolves them when `train.steps` is 0 (a
    puzzle run's epochs over its dataset): ASHA's max_t and rungs, the same in every trial."""
    if cfg.train.steps > 0:
        return cfg
    from hrm_ray.train.resolve import resolve_config

    resolved = resolve_config(cfg).train
    cfg.train.steps, cfg.train.val_every = resolved.steps, resolved.val_every
    return cfg


@dataclass
class SweepSpec:
    """What a sweep runs (sweep.json holds it): build it from a Config with `SweepSpec.from_config`."""
    base: dict[str, Any]            # the config tree every trial starts from (to_dict(Config) without `tune`)
    name: str
    storage: str                    # the sweep lives in <storage>/<name>/
    space: dict[str, Any]           # the `tune:` search space as written: dotted path -> {distribution: args}
    max_t: int                      # the step budget of a trial (ASHA's max_t)
    num_samples: int
    max_concurrent_trials: int      # 0: as many as the cluster's resources allow
    grace_period: int               # steps before ASHA's first cut; 0: max_t / reduction_factor**2
    reduction_factor: int
    scheduler: str                  # asha | fifo (every trial runs to max_t)
    seed: int
    metric: str                     # what trials are ranked by (ASHA's rungs, the best trial), from the task
    mode: str                       # min | max
    points: list[dict[str, Any]] = field(default_factory=list)  # explicit trial configs (num_samples of them)

    @classmethod
    def from_config(cls, cfg: Config, name: str, storage: str) -> SweepSpec:
        """The sweep `cfg` describes: its `tune` section over the rest of it (the trials' base, where the
        sweep's settings have no part), ranked as its task ranks runs."""
        cfg = with_step_budget(cfg)
        tune = cfg.tune
        metric, mode = sweep_metric(cfg.task)
        base = {section: value for section, value in to_dict(cfg).items() if section != "tune"}
        return cls(base=base, name=name, storage=storage, space=dict(tune.space),
                   max_t=tune.max_t or cfg.train.steps, num_samples=tune.num_samples,
                   max_concurrent_trials=tune.max_concurrent_trials, grace_period=tune.grace_period,
                   reduction_factor=tune.reduction_factor, scheduler=tune.scheduler, seed=tune.search_seed,
                   metric=metric, mode=mode)

    @property
    def path(self) -> str:
        return join(self.storage, self.name)

    @property
    def steps(self) -> int:
        return int(self.base["train"]["steps"])

    def search_space(self) -> SearchSpace:
        return SearchSpace.parse(self.space)

    def check(self) -> None:
        """What the config's own validation leaves to the sweep (the budget, ASHA's settings, the trials'
        workers), then the search space against the base config: one line naming what is wrong."""
        if self.steps <= 0 or self.max_t <= 0:
            raise UserError("--steps: a sweep needs a step budget (train.steps > 0, or epochs a puzzle task turns "
                            f"into steps), got steps {self.steps}, max_t {self.max_t}")
        if self.max_t > self.steps:
            raise UserError(f"--max_t must be <= --steps ({self.steps}), got {self.max_t}")
        if self.reduction_factor < 2:
            raise UserError(f"--reduction_factor must be >= 2, got {self.reduction_factor}")
        if not 0 <= self.grace_period <= self.max_t:
            raise UserError(f"--grace_period must be in [0, max_t={self.max_t}], got {self.grace_period}")
        if worker_group(from_dict(self.base).ray).in_process:
            raise UserError("--num_workers: a sweep trial needs >= 1 Ray Train worker (local mode, num_workers 0, "
                            "does not report to Tune)")
        if self.points and len(self.points) != self.num_samples:
            raise UserError(f"{len(self.points)} explicit trial configs but --num_samples {self.num_samples}")
        check_space(self.search_space(), self.base)

    def grace(self) -> int:
        val_every = int(self.base["train"]["val_every"])
        grace = self.grace_period or max(1, self.max_t // self.reduction_factor ** 2)
        return min(self.max_t, max(grace, val_every))


def check_space(space: SearchSpace, base: dict[str, Any]) -> None:
    """Each knob names a field of the base config that its distribution fits, and the ends of its range
    make a valid config: a bad knob fails here, not in every trial."""
    types = leaf_paths(from_dict(base))
    for knob in space.knobs:
        if knob.path not in types:
            raise UserError(f"tune: {knob.path}: not a field of this config (model {base['model']['name']})"
                            f"{suggest(knob.path, types)}")
        _check_kind(knob, types[knob.path])
        for value in knob.corners():
            try:
                trial_config(base, {knob.path: value})
            except UserError as exc:
                raise UserError(f"tune: {knob.path} = {value!r}: {exc}") from None


def _check_kind(knob: Knob, kind: type) -> None:
    if kind in (bool, str) and knob.kind != "choice":
        raise UserError(f"tune: {knob.path}: a {kind.__name__} field takes `choice` only, got {knob.kind}")
    if kind is int and knob.draws_fractions():
        raise UserError(f"tune: {knob.path}: an integer field: use randint, choice, or quniform/qloguniform with "
                        f"an integer Q, got {knob.kind}")


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
    start: dict[str, float] = field(default_factory=dict)  # its initial values and the gates they gave at step 0


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
    """The base config with a trial's parameters (a model name first: it decides the model's fields); the
    ones that are the model's initial values join `train.init_values`, so they win over `--init_from`'s."""
    cfg = from_dict(base)
    for path, value in sorted(params.items(), key=lambda item: item[0] != "model.name"):
        set_value(cfg, path, value, f"search space {path}")
    initial = [f"model.{name}" for name in registry.family_of(cfg.model).init_values if f"model.{name}" in params]
    if initial:
        cfg.train.init_values = ",".join(dict.fromkeys([*init_value_paths(cfg), *initial]))
    return validate(cfg)


def run_trial(params: dict[str, Any], base: dict[str, Any], storage_root: str, metric: str = METRIC,
              fit: Fit | None = None, env: dict[str, str] | None = None) -> None:
    """Tune's trial driver: one Ray Train run under `storage_root` (the sweep's runs/) whose evaluations reach
    Tune through TuneReportCallback, its Ray Data held to the trial's share of the cluster (`fit`, from
    `plan_trials`); `env`: the sweep driver's object-store settings (`hrm_ray.storage.store_env`)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from hrm_ray.train.ray_trainer import train

    adopt_store_env(env or {})

    cfg = trial_config(base, params)
    cfg.train.run_name = ray.tune.get_context().get_trial_id()
    cfg.ray.storage_path = storage_root
    result = train(cfg, callbacks=[TuneReportCallback()], fit=fit)
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
    RunFiles(spec.path).write_bytes(SWEEP_FILE, json.dumps(asdict(spec), indent=2).encode())


def load_spec(path: str) -> SweepSpec:
    """The settings a sweep was started with (its sweep.json)."""
    data = json.loads(storage.read_text(join(path, SWEEP_FILE)))
    if set(data) != {f.name for f in fields(SweepSpec)}:
        raise UserError(f"{path}/{SWEEP_FILE} was written by an older version of the sweep: it cannot be continued; "
                        f"pick another --name for a new sweep")
    return SweepSpec(**data)


def build_tuner(spec: SweepSpec, restore: bool, fit: Fit | None = None):
    """The Tuner of `spec` (restored: the stored one), `fit.trials` trials at once (`plan_trials`)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from hrm_ray.tune.asha import PersistentASHA

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=spec.base, storage_root=join(spec.path, RUNS_DIR), metric=spec.metric,
                             fit=fit, env=store_env()),
        {"CPU": TRIAL_DRIVER_CPUS})
    if restore:
        location = ray_storage(spec.path)
        return tune.Tuner.restore(location["storage_path"], trainable=trainable, resume_unfinished=True,
                                  resume_errored=True, storage_filesystem=location.get("storage_filesystem"))
    if spec.scheduler == "asha":
        scheduler = PersistentASHA(spec.path, RUNS_DIR, time_attr=TIME_ATTR, max_t=spec.max_t, grace_period=spec.grace(),
                                   reduction_factor=spec.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    searcher = BasicVariantGenerator(points_to_evaluate=spec.points or None, random_state=spec.seed,
                                     max_concurrent=fit.trials if fit else spec.max_concurrent_trials)  # TuneConfig's would be ignored
    stop = {TIME_ATTR: spec.max_t} if spec.max_t < spec.steps else None  # a budget below the runs' own steps
    return tune.Tuner(
        trainable,
        param_space=spec.search_space().tune_space(),
        tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler, search_alg=searcher,
                                    num_samples=spec.num_samples),
        run_config=tune.RunConfig(**ray_storage(spec.storage), name=spec.name, stop=stop, verbose=1),
    )


def start_ray(spec: SweepSpec) -> None:
    """Attach to `--address`/`$RAY_ADDRESS`, else start a local Ray *with* its dashboard: ASHA kills the
    trials it stops, and only through the dashboard's state API can Ray Train's PlacementGroupCleaner
    see that their controllers died and free their workers' CPUs for the next trials."""
    from hrm_ray.ray_env import ensure_ray, local_cpus

    per_trial = worker_group(from_dict(spec.base).ray).planned_workers * float(spec.base["ray"]["cpus_per_worker"])
    ensure_ray(spec.base["ray"]["address"] or None, num_cpus=local_cpus(per_trial * max(1, spec.max_concurrent_trials)),
               dashboard=True)


def plan_trials(spec: SweepSpec) -> Fit:
    """How many trials run at once on the cluster Ray is up on (at most --max_concurrent_trials), each
    trial's driver, workers and Ray Data counted (hrm_ray.train.resources), planned from the base config; a
    UserError when not even one fits."""
    from hrm_ray.train.ray_trainer import reads_ray_data
    from hrm_ray.train.resources import cluster_now, plan_sweep, run_need

    base = from_dict(spec.base)
    need = run_need(base.ray, reads_ray_data(base), TRIAL_DRIVER_CPUS)
    return plan_sweep(cluster_now(), need, spec.num_samples, spec.max_concurrent_trials)


def _start_or_restore(spec: SweepSpec, log: Callable[[str], None]) -> tuple[SweepSpec, bool]:
    """The spec to run: a stored sweep's own settings (restored), else `spec`, checked and saved."""
    from ray import tune

    from hrm_ray.tune.asha import write_state

    location = ray_storage(spec.path)
    if tune.Tuner.can_restore(location["storage_path"], storage_filesystem=location.get("storage_filesystem")):
        stored = load_spec(spec.path)
        if asdict(stored) != json.loads(json.dumps(asdict(spec))):
            log(f"[yellow]sweep {spec.path} exists: continuing it with its original settings "
                f"({SWEEP_FILE}); pick another --name for a new sweep[/yellow]")
        log(f"resuming sweep {spec.path}")
        return stored, True
    spec.check()
    _save_spec(spec)
    write_state(spec.path, {})  # no rungs left by an earlier sweep of this name
    log(f"sweep {spec.path}: {spec.num_samples} trials ranked by {spec.metric} ({spec.mode}), {spec.scheduler} "
        f"(max_t {spec.max_t} steps" + (f", grace {spec.grace()}, reduction factor {spec.reduction_factor})"
                                         if spec.scheduler == "asha" else ")"))
    return spec, False


def run_sweep(spec: SweepSpec, log: Callable[[str], None] = print, report: bool = True) -> SweepResult:
    """Run the sweep, or continue it when `<storage>/<name>/` holds an interrupted one."""
    requested = spec
    spec, restored = _start_or_restore(spec, log)
    start_ray(requested)  # after the checks: a bad setting never waits for Ray to start
    fit = plan_trials(spec)
    log(f"{fit.trials} trial{'s' * (fit.trials != 1)} at once" + (f", Ray Data tasks of {fit.data_cpus:g} CPU each"
                                                                   if fit.data_cpus else ""))
    grid = build_tuner(spec, restored, fit).fit()
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
def trial_rows(grid, spec: SweepSpec) -> list[TrialRow]:
    rows = []
    for result in grid:
        config = dict(result.config or {})
        last = result.metrics or {}
        trial_id = str(last.get("trial_id") or Path(result.path).name)
        records = run_records(join(spec.path, RUNS_DIR, trial_id))
        history = run_curve(records, METRIC) or _curve(result.metrics_dataframe, METRIC)
        ranked = history if spec.metric == METRIC else (run_curve(records, spec.metric)
                                                        or _curve(result.metrics_dataframe, spec.metric))
        losses = [v for _, v in history if math.isfinite(v)]
        values = [v for _, v in ranked if math.isfinite(v)]
        reported = max([int(s) for s, _ in history + ranked], default=0)
        rows.append(TrialRow(
            trial_id=trial_id, params=config, best_val_loss=min(losses) if losses else None,
            steps=max([reported, *(int(r.get("step", 0)) for r in records)]), stopped_early=reported < spec.max_t,
            status=_status(result, last), history=history, path=_relative(result.path, spec.path),
            error=_last_line(result.error), metric=spec.metric, mode=spec.mode,
            best_metric=(max if spec.mode == "max" else min)(values) if values else None,
            start=next(({k: v for k, v in r.items() if k not in ("step", "split", "time")}
                        for r in records if r.get("split") == "start"), {})))
    return sorted(rows, key=lambda r: r.trial_id)


def _curve(frame, metric: str) -> list[list[float]]:
    """[[step, value], ...] of one reported metric (rows without it skipped)."""
    if frame is None or metric not in frame or TIME_ATTR not in frame:
        return []
    return [[float(s), float(v)] for s, v in zip(frame[TIME_ATTR], frame[metric], strict=True)
            if not (math.isnan(float(s)) or math.isnan(float(v)))]


def _last_line(error: BaseException | None) -> str:
    """A trial's error in one line: the UserError's message when it is one, else the last line of its text."""
    from hrm_ray.ray_errors import find_user_error

    user_error = find_user_error(error)
    lines = [x.strip() for x in str(user_error or error or "").splitlines() if x.strip()]
    text = " ".join(lines) if user_error is not None else (lines[-1] if lines else "")
    return text[:300]


def _status(result, last: dict[str, Any]) -> str:
    """ERROR, TERMINATED (ran to the end, or stopped by the scheduler: Tune marks both done) or UNFINISHED."""
    if result.error:
        return "ERROR"
    return "TERMINATED" if last.get("done") else "UNFINISHED"


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
    """The base config with the best trial's parameters, as a full YAML that `hrm-ray train --config` and the
    experiment scripts accept."""
    cfg = trial_config(spec.base, best.params)
    cfg.train.run_name = f"{spec.name}-best"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best.params.items()))
    header = (f"# Best trial of sweep '{spec.name}': {best.trial_id}, {metric_text(best)} after "
              f"{best.steps} steps\n# {params}\n"
              f"# hrm-ray train --config {BEST_CONFIG_FILE}, or an experiment script's --config (flags override)\n")
    return header + yaml.safe_dump(to_dict(cfg), sort_keys=False)


def metric_text(row: TrialRow) -> str:
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
