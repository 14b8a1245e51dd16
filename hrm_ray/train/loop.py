"""The training loop: plain PyTorch, no Ray. Composes a Task with the optimizer, schedules, precision,
checkpoints, validation and logging; a `Reporter` says where checkpoints go (Ray or the run directory).

`run_loop` reads top to bottom: the finished check, `setup` (model, optimizers, schedule, scaler, data),
`restore` on resume, then per step `train_step`, every `log_steps` a `log_line`, every `val_every` (0: only at
the end) `validate` (with the `eval:` section's task evaluations when due) -> `update_best` (the patience
decision) -> `report_evaluation` (checkpoint and metrics).
"""
from __future__ import annotations

import contextlib
import json
import math
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import yaml
from torch import nn

from hrm_ray.config import Config, TrainConfig, get_value, init_value_paths, to_dict
from hrm_ray.errors import UserError
from hrm_ray.train.checkpoint import (
    BEST_MODEL_DIR,
    CheckpointStore,
    load_checkpoint,
    load_model_weights,
    read_meta,
    rng_state,
    set_rng_state,
    write_best_model,
)
from hrm_ray.train.compile import CompileReport, compile_model
from hrm_ray.train.data_feed import BatchFeed
from hrm_ray.train.flops import counted, flops_record
from hrm_ray.train.lr_schedule import LRSchedule
from hrm_ray.train.metrics import MetricsLogger
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.run_plan import run_plan
from hrm_ray.train.task import (
    Selection,
    Task,
    WorkerContext,
    after_step,
    eval_weights,
    load_task_state,
    rank_micro_batches,
    selection,
    task_state,
    unwrap,
)
from hrm_ray.train.task_evals import run_task_evals, selection_skipped, task_evals_due, validation_due

WORKERS_FILE = "workers.json"  # where the ranks run: [{rank, node_id, hostname}]


class NonFiniteLossError(UserError):
    """Too many non-finite steps in a row; the last good checkpoint is left as it was (a UserError: the
    config or data must change, a retry would fail the same way)."""


class Reporter(Protocol):
    def latest_checkpoint(self) -> Path | None:
        """Directory of the checkpoint to resume from, if any."""

    def origin(self, checkpoint: Path) -> str:
        """Where the checkpoint `latest_checkpoint` gave lives (a bucket's for a local copy), for messages."""

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        """Called by every rank at each evaluation; rank 0 passes the checkpoint state."""


class LocalReporter:
    """No Ray: checkpoints are `checkpoint_*` directories of the run directory (newest `limit` kept)."""

    def __init__(self, run_dir: str | Path, limit: int):
        self.store = CheckpointStore(run_dir, limit)

    def latest_checkpoint(self) -> Path | None:
        return self.store.latest()

    def origin(self, checkpoint: Path) -> str:
        return self.store.origin(checkpoint)

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        if state is not None:
            self.store.save(state, meta)


@dataclass
class LoopResult:
    step: int
    total_steps: int
    best_val_loss: float = math.inf
    selection_metric: str = "loss"      # the task's selection metric; best_metric is its best value
    best_metric: float = math.inf
    last_val: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    already_done: bool = False
    nonfinite_steps: int = 0


@dataclass
class TrainState:
    """The loop's counters, saved in every checkpoint and restored on resume."""
    step: int
    best: tuple[float, float]          # `Selection.score` of the best evaluation: picks best-model/, drives patience
    best_loss: float = math.inf        # the lowest validation loss (reported for every task)
    bad_evals: int = 0                 # evaluations since `best` last improved (after the grace steps)
    nonfinite_total: int = 0
    nonfinite_run: int = 0             # in a row; not saved (a resumed run counts afresh)

    def result(self, steps_total: int, sel: Selection, last_val: dict[str, float], stopped: bool) -> LoopResult:
        return LoopResult(step=self.step, total_steps=steps_total, best_val_loss=self.best_loss,
                          selection_metric=sel.metric, best_metric=sel.value(self.best), last_val=last_val,
                          stopped_early=stopped, nonfinite_steps=self.nonfinite_total)


@dataclass
class LoopParts:
    """What `setup` builds: the model (as trained and unwrapped), its optimizers, schedule and scaler, the
    data feed. `scaled` are the optimizers the GradScaler unscales and steps; a `scale_invariant` one
    (sign-SGD) steps on the scaled gradients itself and skips non-finite ones."""
    model: nn.Module                   # wrapped for distribution (DDP); what forward runs
    core: nn.Module                    # the model itself: its state dict, its optimizers
    compiled: CompileReport | None
    optimizers: list[torch.optim.Optimizer]
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    feed: BatchFeed
    dtype: torch.dtype | None          # autocast dtype (None: full precision)
    params: list[nn.Parameter]         # what the gradient norm is clipped over
    initial: dict[str, float] = field(default_factory=dict)  # a fresh run's `train.init_values` (short names)

    @property
    def scaled(self) -> list[torch.optim.Optimizer]:
        return [o for o in self.optimizers if not getattr(o, "scale_invariant", False)]


def total_steps(cfg: Config, train_samples: int) -> int:
    """`--steps` when > 0, else `--epochs` passes over the data in global batches (the same for any worker
    count of an elastic run)."""
    if cfg.train.steps > 0:
        return cfg.train.steps
    per_step = cfg.train.batch_size * cfg.train.grad_accum_steps * run_plan(cfg).planned_workers
    return max(1, cfg.train.epochs * (train_samples // per_step))


def already_finished(meta: dict[str, Any] | None, steps_total: int, sel: Selection, run_name: str,
                     announce: bool = True) -> LoopResult | None:
    """The result of a run whose newest checkpoint (its `meta`, None: none) already reached `steps_total`,
    said on stdout when `announce`; None when there is training to do."""
    if meta is None or meta["step"] < steps_total:
        return None
    if announce:
        print(f"run '{run_name}' is already at step {meta['step']} >= steps {steps_total}: nothing to do (raise "
              f"--steps to train further)")
    best_loss = float(meta.get("best_val_loss", math.inf))
    return LoopResult(step=meta["step"], total_steps=steps_total, already_done=True, best_val_loss=best_loss,
                      selection_metric=sel.metric, best_metric=sel.value(stored_score(meta, sel)))


def stored_score(stored: dict[str, Any], sel: Selection) -> tuple[float, float]:
    """The best evaluation's `Selection.score` from a checkpoint's state or meta (checkpoints from before
    the selection metric existed hold only the best validation loss)."""
    if "best_metric" in stored and stored.get("selection_metric", sel.metric) == sel.metric:
        return sel.score(float(stored["best_metric"]), float(stored.get("best_metric_loss", math.inf)))
    if sel == Selection():
        loss = float(stored.get("best_val_loss", math.inf))
        return sel.score(loss, loss)
    return sel.score(sel.worst, math.inf)


def load_init_weights(model: nn.Module, path: str) -> tuple[list[str], list[str]]:
    """Load `--init_from` weights (missing and unexpected keys allowed); a tensor of another shape (another
    vocabulary or width) is a UserError naming the path."""
    try:
        result = model.load_state_dict(load_model_weights(path), strict=False)
    except RuntimeError as exc:
        raise UserError(f"--init_from {path}: its weights do not fit this model ({_first_mismatch(exc)})") from None
    return list(result.missing_keys), list(result.unexpected_keys)


def load_resumed_weights(model: nn.Module, weights: dict[str, torch.Tensor], resume_dir: Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{resume_dir}: this run's checkpoint does not fit the model of the current config (model "
                        f"settings changed since? use another --run_name): {_first_mismatch(exc)}") from None


def _first_mismatch(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return lines[0] if lines else str(exc)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


class MetricWindow:
    """Sums 0-dim tensors over the logging window on the device; one host sync when read."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, metrics: dict[str, torch.Tensor], weight: float = 1.0) -> None:
        """Add one optimizer step's values (`weight` 1/accum for each micro-batch's share)."""
        for key, value in metrics.items():
            value = value.detach().float()
            if not key.endswith(("_min", "_max")):
                value = value * weight
            old = self.values.get(key)
            if old is None:
                self.values[key] = value.clone()
            elif key.endswith("_min"):
                self.values[key] = torch.minimum(old, value)
            elif key.endswith("_max"):
                self.values[key] = torch.maximum(old, value)
            else:
                self.values[key] = old + value

    def tick(self) -> None:
        self.count += 1

    def peek(self, prefix: str) -> dict[str, float]:
        """The window's values so far of the keys starting with `prefix`, as `read` gives them, kept."""
        keys = [k for k in self.values if k.startswith(prefix)]
        return {k: float(self.values[k]) / (1 if k.endswith(("_min", "_max")) else max(1, self.count)) for k in keys}

    def read(self) -> dict[str, float]:
        if not self.values:
            return {}
        keys = list(self.values)
        numbers = torch.stack([self.values[k] for k in keys]).tolist()
        out = {k: (v if k.endswith(("_min", "_max")) else v / max(1, self.count))
               for k, v in zip(keys, numbers, strict=True)}
        self.values, self.count = {}, 0
        return out


class Throughput:
    """Tokens counted on the device over the logging window; the clock restarts after each evaluation, so
    evaluation time is not training time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.tokens = torch.zeros((), device=device)
        self.restart()

    def add(self, tokens: torch.Tensor | int) -> None:
        self.tokens += tokens if isinstance(tokens, torch.Tensor) else float(tokens)

    def restart(self) -> None:
        self.start = time.perf_counter()

    def read(self, world_size: int) -> float:
        """Tokens per second of all ranks since the last read (or restart); one host sync."""
        elapsed = time.perf_counter() - self.start
        rate = float(self.tokens) * world_size / max(elapsed, 1e-9)
        self.tokens = torch.zeros((), device=self.device)
        self.restart()
        return rate


def evaluate(model: nn.Module, task: Task, batches: Iterable[dict], step: int, device: torch.device,
             dtype: torch.dtype | None) -> dict[str, float]:
    """Token-weighted (sum-then-divide) validation over this rank's batches, all-reduced across ranks."""
    model.eval()
    sums = torch.zeros(len(task.eval_sum_keys), dtype=torch.float64, device=device)
    with torch.no_grad():
        for batch in batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with _autocast(device, dtype):
                values = task.eval_sums(model, batch, step)
            sums += torch.stack([values[k].detach().double() for k in task.eval_sum_keys])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    model.train()
    return task.eval_metrics(dict(zip(task.eval_sum_keys, sums.tolist(), strict=True)))


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def run_loop(cfg: Config, task: Task, ctx: WorkerContext, reporter: Reporter, files: RunFiles | None,
             prepare_model: Callable[[nn.Module], nn.Module] | None = None,
             logger: MetricsLogger | None = None) -> LoopResult:
    """Train `task` to `total_steps`, resuming from the reporter's latest checkpoint when there is one.

    `prepare_model` wraps the model for distribution (Ray's `prepare_model`); by default it is only
    moved to `ctx.device`. `files` is the run directory (rank 0 writes metrics and best-model/ there).
    """
    tc, sel, rank0 = cfg.train, selection(task), ctx.rank == 0
    steps_total = total_steps(cfg, task.train_samples())
    resume_dir = reporter.latest_checkpoint()
    meta = read_meta(resume_dir) if resume_dir is not None else None
    if (done := already_finished(meta, steps_total, sel, tc.run_name, announce=rank0)) is not None:
        return done
    record_workers(ctx, files)
    parts = setup(cfg, task, ctx, steps_total, prepare_model, fresh=resume_dir is None)
    if resume_dir is None:
        state = TrainState(step=0, best=sel.score(sel.worst, math.inf))
    else:
        state = restore(resume_dir, parts, task, ctx, sel, tc.run_name, reporter.origin(resume_dir))
    if logger is None:
        logger = MetricsLogger(files if rank0 else None, steps_total, start_step=state.step, enabled=rank0,
                               wandb=tc.wandb, run_name=tc.run_name, config=to_dict(cfg),
                               project=tc.wandb_project, run_id=tc.wandb_run_id, resumed=resume_dir is not None)
    window, throughput = MetricWindow(), Throughput(ctx.device)
    first_step = state.step
    last_val: dict[str, float] = {}
    stopped = False
    parts.model.train()
    try:
        while state.step < steps_total and not stopped:
            lr = parts.schedule.apply(state.step)
            if state.step == first_step and not tc.compile:  # one step under the FLOP counter (train.flops)
                flops = counted(lambda: train_step(cfg, task, parts, ctx, state, window, throughput, logger))
                logger.log(state.step, "flops", flops_record(flops, ctx.world_size))
            else:
                train_step(cfg, task, parts, ctx, state, window, throughput, logger)
            if state.step == 1 and parts.initial:  # the initial values and the gates they gave at step 0
                logger.log(0, "start", {**parts.initial, **window.peek("gate")})
            last = state.step == steps_total
            if state.step % tc.log_steps == 0 or last:
                log_line(logger, task, parts, state, window.read(), lr, throughput.read(ctx.world_size))
            if validation_due(tc.val_every, state.step, last):
                val, evals, score = validate(cfg, task, parts, ctx, files, sel, state, last)
                logger.log(state.step, "val", val)
                if evals:
                    logger.log(state.step, "eval", evals)
                stopped = update_best(state, val, score, tc)
                report_evaluation(reporter, cfg, task, parts, ctx, state, sel, val, evals, final=stopped or last)
                last_val = {**val, **evals}
                throughput.restart()
        if stopped:
            logger.event(f"early stop at step {state.step}: validation {sel.metric} has not improved on the best "
                         f"{sel.value(state.best):.4f} for {state.bad_evals} evaluations")
    except NonFiniteLossError:
        logger.close()
        raise
    finally:
        parts.feed.close()  # a Ray Data iterator must not outlive Ray
    logger.close()
    return state.result(steps_total, sel, last_val, stopped)


def setup(cfg: Config, task: Task, ctx: WorkerContext, steps_total: int,
          prepare_model: Callable[[nn.Module], nn.Module] | None, fresh: bool) -> LoopParts:
    """The model (seeded, `--init_from` weights on a fresh run, wrapped, compiled in place after DDP
    wrapping), its optimizers, the lr schedule, the fp16 scaler and this rank's data feed."""
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = task.build_model()
    initial = initialise(cfg, model, ctx.rank == 0) if fresh else {}
    model = prepare_model(model) if prepare_model else model.to(ctx.device)
    core = unwrap(model)
    compiled = compile_model(core) if tc.compile else None
    optimizers = task.build_optimizers(core)
    schedule = LRSchedule(optimizers, steps_total, cfg.optim.warmup_steps, cfg.optim.lr_scheduler,
                          cfg.optim.lr_min_ratio)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=tc.mixed_precision == "fp16")
    return LoopParts(model=model, core=core, compiled=compiled, optimizers=optimizers, schedule=schedule,
                     scaler=scaler, feed=task.train_feed(ctx), dtype=autocast_dtype(tc.mixed_precision),
                     params=[p for p in core.parameters() if p.requires_grad], initial=initial)


def initialise(cfg: Config, model: nn.Module, announce: bool) -> dict[str, float]:
    """A fresh run's start: `--init_from` weights, then the `train.init_values` set again over them (an initial
    value of the config wins over the loaded one; a resume never comes here). -> short name: value of each."""
    tc, paths = cfg.train, init_value_paths(cfg)
    if tc.init_from:
        missing, unexpected = load_init_weights(model, tc.init_from)
        if paths:
            model.apply_initial_values([path.removeprefix("model.") for path in paths])
        if announce:
            print(f"initialised from {tc.init_from} ({len(missing)} missing, {len(unexpected)} unexpected keys)"
                  + (f"; initial values set again: {', '.join(paths)}" if paths else ""))
    return {path.rsplit(".", 1)[-1]: float(get_value(cfg, path)) for path in paths}


def restore(resume_dir: Path, parts: LoopParts, task: Task, ctx: WorkerContext, sel: Selection,
            run_name: str, origin: str) -> TrainState:
    """Everything a checkpoint saved, back in place: weights, optimizers, lr schedule, scaler, this rank's
    data position, the task's state, the RNGs (last: nothing after them draws); returns the counters."""
    saved = load_checkpoint(resume_dir)
    load_resumed_weights(parts.core, saved["model"], resume_dir)
    for optimizer, opt_state in zip(parts.optimizers, saved["optimizers"], strict=True):
        optimizer.load_state_dict(opt_state)
    configured = parts.schedule.state_dict()
    parts.schedule.load_state_dict(saved["scheduler"])
    parts.scaler.load_state_dict(saved["scaler"])
    parts.feed.load_state_dict(saved["data_position"][ctx.rank % len(saved["data_position"])])
    load_task_state(task, saved.get("task", {}))
    set_rng_state(saved["rng"])
    if ctx.rank == 0:
        print(f"resumed '{run_name}' from {origin} at step {saved['step']}")
        if len(saved["data_position"]) != ctx.world_size:
            print(f"the worker group now has {ctx.world_size} worker(s), the checkpoint's had "
                  f"{len(saved['data_position'])}: the same global batch, split over {ctx.world_size}")
        if configured != saved["scheduler"]:
            print(f"the learning-rate schedule continues as saved ({saved['scheduler']}); the config now gives "
                  f"{configured}")
    return TrainState(step=saved["step"], best=stored_score(saved, sel), best_loss=saved["best_val_loss"],
                      bad_evals=saved["evals_without_improvement"], nonfinite_total=saved["nonfinite_total"])


def train_step(cfg: Config, task: Task, parts: LoopParts, ctx: WorkerContext, state: TrainState,
               window: MetricWindow, throughput: Throughput, logger: MetricsLogger) -> None:
    """One optimizer step at `state.step` over this rank's micro-batches of the global batch
    (hrm_ray.train.global_batch); a non-finite one is skipped and counted (NonFiniteLossError after
    `max_nonfinite_steps` in a row)."""
    accum = rank_micro_batches(task, ctx.world_size)
    loss = forward_backward(task, parts, ctx, state.step, accum, window, throughput)
    grad_norm, applied = apply_update(task, parts, ctx, state.step, loss, cfg.optim.grad_clip)
    count_nonfinite(state, applied, cfg.train.max_nonfinite_steps, logger)
    window.add({"loss": loss, "grad_norm": grad_norm})
    window.tick()
    state.step += 1


def forward_backward(task: Task, parts: LoopParts, ctx: WorkerContext, step: int, accum: int,
                     window: MetricWindow, throughput: Throughput) -> torch.Tensor:
    """Accumulate the gradients of `accum` micro-batches (DDP syncs them on the last); the step's loss: the
    micro-batches' mean, or for a task whose `loss_per_token` is set, the global batch's per-token loss."""
    per_token = getattr(task, "loss_per_token", False)
    loss_sum = torch.zeros((), device=ctx.device)
    tokens = torch.zeros((), device=ctx.device)
    for micro in range(accum):
        batch = {k: v.to(ctx.device, non_blocking=True) for k, v in parts.feed.next_batch().items()}
        last = micro == accum - 1
        sync = contextlib.nullcontext() if last or not hasattr(parts.model, "no_sync") else parts.model.no_sync()
        with sync:
            with _autocast(ctx.device, parts.dtype):
                out = task.forward(parts.model, batch, step)
            weight = torch.as_tensor(out.num_tokens, device=ctx.device).float() if per_token else 1.0 / accum
            parts.scaler.scale(out.loss * weight).backward()
        loss_sum += out.loss.detach().float() * weight
        tokens += out.num_tokens
        window.add(out.metrics, 1.0 / accum)
        throughput.add(out.num_tokens)
    return per_global_token(parts, ctx, loss_sum, tokens) if per_token else loss_sum


def per_global_token(parts: LoopParts, ctx: WorkerContext, loss_sum: torch.Tensor, tokens: torch.Tensor
                     ) -> torch.Tensor:
    """The step's token-weighted loss and gradients divided by the global batch's token count: the same
    whatever the number of ranks and micro-batches its samples were split into. DDP averaged the ranks'
    gradients (a 1/world), so they are scaled by world / tokens. One all-reduce of two scalars."""
    totals = torch.stack([loss_sum, tokens.float()])
    if ctx.world_size > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    global_tokens = totals[1].clamp_min(1.0)
    scale = ctx.world_size / global_tokens
    for p in parts.params:
        if p.grad is not None:
            p.grad.mul_(scale)
    return totals[0] / global_tokens


def apply_update(task: Task, parts: LoopParts, ctx: WorkerContext, step: int, loss_sum: torch.Tensor,
                 grad_clip: float) -> tuple[torch.Tensor, bool]:
    """Clip and apply the accumulated gradients unless the loss or the gradient is non-finite, then clear
    them; returns (gradient norm, applied). One scalar sync per step, as GradScaler itself does: fp16
    leaves gradient overflow to the scaler; across ranks the all-reduced gradient norm decides."""
    for p in task.frozen_parameters(parts.core, step):
        p.grad = None
    scaled = parts.scaled
    for optimizer in scaled:
        parts.scaler.unscale_(optimizer)
    max_norm = grad_clip if grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_([p for p in parts.params if p.grad is not None], max_norm)
    finite = torch.isfinite(loss_sum)
    if not parts.scaler.is_enabled():
        finite = torch.isfinite(grad_norm) if ctx.world_size > 1 else finite & torch.isfinite(grad_norm)
    applied = bool(finite)
    if applied:
        for optimizer in parts.optimizers:
            if optimizer in scaled:
                parts.scaler.step(optimizer)
            else:
                optimizer.step()
        parts.scaler.update()
        after_step(task, parts.core, step)
    for optimizer in parts.optimizers:
        optimizer.zero_grad(set_to_none=True)
    return grad_norm, applied


def count_nonfinite(state: TrainState, applied: bool, limit: int, logger: MetricsLogger) -> None:
    """Count a skipped (non-finite) step; `limit` in a row (0: no limit) stop the run."""
    if applied:
        state.nonfinite_run = 0
        return
    state.nonfinite_run += 1
    state.nonfinite_total += 1
    step = state.step + 1
    logger.event(f"[yellow]step {step}: non-finite loss/gradient, update skipped ({state.nonfinite_run} in a "
                 f"row, {state.nonfinite_total} in all)[/yellow]")
    if state.nonfinite_run >= limit > 0:
        raise NonFiniteLossError(f"{state.nonfinite_run} non-finite steps in a row at step {step} "
                                 f"(max_nonfinite_steps={limit}); stopped, the last good checkpoint is kept")


def log_line(logger: MetricsLogger, task: Task, parts: LoopParts, state: TrainState, window: dict[str, float],
             lr: float, tokens_per_s: float) -> None:
    """The training line of the logging window that ends at `state.step` (and torch.compile's news)."""
    values = {**window, "lr": lr, "tokens_per_s": tokens_per_s, "nonfinite_steps": state.nonfinite_total,
              **task.step_log(state.step - 1)}
    if parts.compiled is not None:
        values["compile_s"] = parts.compiled.seconds
    logger.log(state.step, "train", values)
    news = parts.compiled.news() if parts.compiled is not None else None
    if news:
        logger.event(news)


def validate(cfg: Config, task: Task, parts: LoopParts, ctx: WorkerContext, files: RunFiles | None,
             sel: Selection, state: TrainState, final: bool
             ) -> tuple[dict[str, float], dict[str, float], tuple[float, float] | None]:
    """Validation metrics, the task evaluations' when due ({} otherwise) and their selection score (None when
    the selection metric is a task's that did not run), all with the task's evaluation weights (e.g. its EMA),
    which also go to best-model/ when the score beats the best so far."""
    with eval_weights(task, parts.core):
        val = evaluate(parts.model, task, task.val_batches(ctx), state.step, ctx.device, parts.dtype)
        due = task_evals_due(cfg, state.step, final)
        evals = run_task_evals(task, parts.core, state.step, ctx) if due else {}
        metrics = {**val, **evals}
        if sel.metric not in metrics:
            if selection_skipped(sel.metric, cfg, metrics, due):
                return val, evals, None
        score = sel.score(metrics[sel.metric], val["loss"])
        if score > state.best and ctx.rank == 0 and cfg.train.save_best_model and files is not None:
            _write_best(files, cfg, parts.core, task, state.step, metrics, sel)
    return val, evals, score


def update_best(state: TrainState, val: dict[str, float], score: tuple[float, float] | None,
                tc: TrainConfig) -> bool:
    """Track the best evaluation; True when patience runs out (`eval_loss_patience` evaluations after
    `patience_grace_steps` without a better selection score). An evaluation without a score (a task metric
    whose tasks did not run) leaves selection and patience as they were."""
    state.best_loss = min(state.best_loss, val["loss"])
    if score is None:
        return False
    if score > state.best:
        state.best, state.bad_evals = score, 0
    elif tc.eval_loss_patience > 0 and state.step >= tc.patience_grace_steps:
        state.bad_evals += 1
    return tc.eval_loss_patience > 0 and state.bad_evals >= tc.eval_loss_patience


def report_evaluation(reporter: Reporter, cfg: Config, task: Task, parts: LoopParts, ctx: WorkerContext,
                      state: TrainState, sel: Selection, val: dict[str, float], evals: dict[str, float],
                      final: bool) -> None:
    """Every rank reports the evaluation's metrics (validation as val_*, task evaluations as eval_*); rank 0
    also the checkpoint (every rank's data position)."""
    positions = gather_ranks(parts.feed.state_dict(), ctx.world_size)  # a collective: every rank
    checkpoint = checkpoint_state(cfg, task, parts, state, sel, positions) if ctx.rank == 0 else None
    best = {} if sel.metric == "loss" else {f"best_val_{sel.metric}": sel.value(state.best)}
    metrics = {"step": state.step, **{f"val_{k}": v for k, v in val.items()},
               **{f"eval_{k}": v for k, v in evals.items()}, "best_val_loss": state.best_loss, **best}
    current = {**val, **evals}.get(sel.metric)
    meta = {"step": state.step, "final": final, "best_val_loss": state.best_loss, "val_loss": val["loss"],
            "selection_metric": sel.metric, "selection_mode": sel.mode, "best_metric": sel.value(state.best),
            **({f"val_{sel.metric}": current} if current is not None else {})}
    reporter.report(metrics, checkpoint, meta)


def checkpoint_state(cfg: Config, task: Task, parts: LoopParts, state: TrainState, sel: Selection,
                     positions: list[dict[str, int]]) -> dict[str, Any]:
    """The whole training state as a plain dict: what `restore` puts back."""
    return {"model": parts.core.state_dict(), "optimizers": [o.state_dict() for o in parts.optimizers],
            "scheduler": parts.schedule.state_dict(), "scaler": parts.scaler.state_dict(), "rng": rng_state(),
            "data_position": positions, "step": state.step, "best_val_loss": state.best_loss,
            "selection_metric": sel.metric, "best_metric": sel.value(state.best), "best_metric_loss": -state.best[1],
            "evals_without_improvement": state.bad_evals, "nonfinite_total": state.nonfinite_total,
            "task": task_state(task), "config": to_dict(cfg)}


def gather_ranks(value: Any, world_size: int) -> list[Any]:
    """Every rank's `value` in rank order (a collective under torch.distributed; [value] without it)."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, value)
    return gathered


def record_workers(ctx: WorkerContext, files: RunFiles | None) -> None:
    """Where the ranks run, [{rank, node_id, hostname}] in rank order, into the run's workers.json (rank 0
    writes, this attempt's placement; a collective: every rank calls it)."""
    here = {"rank": ctx.rank, "node_id": ctx.node_id, "hostname": socket.gethostname()}
    workers = gather_ranks(here, ctx.world_size)
    if files is not None and ctx.rank == 0:
        files.write_bytes(WORKERS_FILE, json.dumps(workers, indent=1).encode())


def _write_best(files: RunFiles, cfg: Config, model: nn.Module, task: Task, step: int, val: dict[str, float],
                sel: Selection) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_best_model(tmp, model.state_dict(), yaml.safe_dump(to_dict(cfg), sort_keys=False),
                         task.artifacts(), {"step": step, "selection_metric": sel.metric, "selection_mode": sel.mode,
                                            **{f"val_{k}": v for k, v in val.items()}})
        files.put_dir(tmp, BEST_MODEL_DIR)
