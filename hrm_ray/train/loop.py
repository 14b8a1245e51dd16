"""The training loop: plain PyTorch, no Ray. Composes a Task with the optimizer, schedules, precision,
checkpoints, validation and logging; a `Reporter` says where checkpoints go (Ray or the run directory).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import yaml
from torch import nn

from hrm_ray.config import Config, to_dict
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
from hrm_ray.train.compile import compile_model
from hrm_ray.train.lr_schedule import LRSchedule
from hrm_ray.train.metrics import MetricsLogger
from hrm_ray.train.run_files import RunFiles
from hrm_ray.train.task import (
    Selection,
    Task,
    WorkerContext,
    after_step,
    eval_weights,
    load_task_state,
    selection,
    task_state,
    unwrap,
)


class NonFiniteLossError(UserError):
    """Too many non-finite steps in a row; the last good checkpoint is left as it was (a UserError: the
    config or data must change, a retry would fail the same way)."""


class Reporter(Protocol):
    def latest_checkpoint(self) -> Path | None:
        """Directory of the checkpoint to resume from, if any."""

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        """Called by every rank at each evaluation; rank 0 passes the checkpoint state."""


class LocalReporter:
    """No Ray: checkpoints are `checkpoint_*` directories of the run directory (newest `limit` kept)."""

    def __init__(self, run_dir: str | Path, limit: int):
        self.store = CheckpointStore(run_dir, limit)

    def latest_checkpoint(self) -> Path | None:
        return self.store.latest()

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


def total_steps(cfg: Config, train_samples: int, world_size: int) -> int:
    """`--steps` when > 0, else `--epochs` passes over the data."""
    if cfg.train.steps > 0:
        return cfg.train.steps
    per_step = cfg.train.batch_size * cfg.train.grad_accum_steps * world_size
    return max(1, cfg.train.epochs * (train_samples // per_step))


def finished_result(meta: dict[str, Any], steps_total: int, sel: Selection) -> LoopResult:
    """The result of a run whose stored checkpoint (its `meta`) already reached `steps_total`."""
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

    def read(self) -> dict[str, float]:
        if not self.values:
            return {}
        keys = list(self.values)
        numbers = torch.stack([self.values[k] for k in keys]).tolist()
        out = {k: (v if k.endswith(("_min", "_max")) else v / max(1, self.count))
               for k, v in zip(keys, numbers, strict=True)}
        self.values, self.count = {}, 0
        return out


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
             prepare_model=None, logger: MetricsLogger | None = None) -> LoopResult:
    """Train `task` to `total_steps`, resuming from the reporter's latest checkpoint when there is one.

    `prepare_model` wraps the model for distribution (Ray's `prepare_model`); by default it is only
    moved to `ctx.device`. `files` is the run directory (rank 0 writes metrics and best-model/ there).
    """
    tc = cfg.train
    rank0 = ctx.rank == 0
    sel = selection(task)
    steps_total = total_steps(cfg, task.train_samples(), ctx.world_size)
    resume_dir = reporter.latest_checkpoint()
    if resume_dir is not None:
        meta = read_meta(resume_dir)
        if meta["step"] >= steps_total:
            if rank0:
                print(f"run '{tc.run_name}' is already at step {meta['step']} >= steps {steps_total}: nothing to "
                      f"do (raise --steps to train further)")
            return finished_result(meta, steps_total, sel)

    torch.manual_seed(tc.seed)
    model = task.build_model()
    if resume_dir is None and tc.init_from:
        missing, unexpected = load_init_weights(model, tc.init_from)
        if rank0:
            print(f"initialised from {tc.init_from} ({len(missing)} missing, {len(unexpected)} unexpected keys)")
    model = prepare_model(model) if prepare_model else model.to(ctx.device)
    core = unwrap(model)
    compiled = compile_model(core) if tc.compile else None  # in place, after DDP wrapping
    optimizers = task.build_optimizers(core)
    schedule = LRSchedule(optimizers, steps_total, cfg.optim.warmup_steps, cfg.optim.lr_scheduler,
                          cfg.optim.lr_min_ratio)
    dtype = autocast_dtype(tc.mixed_precision)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=tc.mixed_precision == "fp16")
    # A `scale_invariant` optimizer (sign-SGD) steps on the scaled gradients itself and skips non-finite
    # ones; the scaler unscales, checks and steps the others.
    scaled = [o for o in optimizers if not getattr(o, "scale_invariant", False)]
    feed = task.train_feed(ctx)

    # `best`: score of the best evaluation by the task's selection metric (picks best-model/, drives
    # patience); `best_loss`: the lowest validation loss (reported for every task).
    step, best, best_loss, bad_evals, nonfinite_total = 0, sel.score(sel.worst, math.inf), math.inf, 0, 0
    if resume_dir is not None:
        state = load_checkpoint(resume_dir)
        load_resumed_weights(core, state["model"], resume_dir)
        for optimizer, opt_state in zip(optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(opt_state)
        scaler.load_state_dict(state["scaler"])
        feed.load_state_dict(state["data_position"][ctx.rank % len(state["data_position"])])
        step, best_loss, bad_evals = state["step"], state["best_val_loss"], state["evals_without_improvement"]
        best = stored_score(state, sel)
        nonfinite_total = state["nonfinite_total"]
        load_task_state(task, state.get("task", {}))
        set_rng_state(state["rng"])
        if rank0:
            print(f"resumed '{tc.run_name}' from {resume_dir} at step {step}")

    if logger is None:
        logger = MetricsLogger(files if rank0 else None, steps_total, start_step=step, enabled=rank0,
                               wandb=tc.wandb, run_name=tc.run_name, config=to_dict(cfg))
    params = [p for p in core.parameters() if p.requires_grad]
    window = MetricWindow()
    window_start, window_tokens = time.perf_counter(), torch.zeros((), device=ctx.device)
    nonfinite_run = 0
    result = LoopResult(step=step, total_steps=steps_total, best_val_loss=best_loss, selection_metric=sel.metric,
                        best_metric=sel.value(best), nonfinite_steps=nonfinite_total)
    model.train()

    while step < steps_total:
        lr = schedule.apply(step)
        loss_sum = torch.zeros((), device=ctx.device)
        for micro in range(tc.grad_accum_steps):
            batch = {k: v.to(ctx.device, non_blocking=True) for k, v in feed.next_batch().items()}
            last = micro == tc.grad_accum_steps - 1
            sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
            with sync:
                with _autocast(ctx.device, dtype):
                    out = task.forward(model, batch, step)
                scaler.scale(out.loss / tc.grad_accum_steps).backward()
            loss_sum += out.loss.detach().float()
            window.add(out.metrics, 1.0 / tc.grad_accum_steps)
            window_tokens += out.num_tokens if isinstance(out.num_tokens, torch.Tensor) else float(out.num_tokens)
        for p in task.frozen_parameters(core, step):
            p.grad = None
        for optimizer in scaled:
            scaler.unscale_(optimizer)
        max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
        # One scalar sync per optimizer step to skip a non-finite update, as GradScaler itself does.
        # fp16 leaves gradient overflow to the scaler; across ranks the all-reduced grad norm decides.
        finite = torch.isfinite(loss_sum)
        if not scaler.is_enabled():
            finite = torch.isfinite(grad_norm) if ctx.world_size > 1 else finite & torch.isfinite(grad_norm)
        if bool(finite):
            for optimizer in optimizers:
                if optimizer in scaled:
                    scaler.step(optimizer)
                else:
                    optimizer.step()
            scaler.update()
            after_step(task, core, step)
            nonfinite_run = 0
        else:
            nonfinite_run += 1
            nonfinite_total += 1
            logger.event(f"[yellow]step {step + 1}: non-finite loss/gradient, update skipped "
                         f"({nonfinite_run} in a row, {nonfinite_total} in all)[/yellow]")
            if nonfinite_run >= tc.max_nonfinite_steps > 0:
                logger.close()
                raise NonFiniteLossError(
                    f"{nonfinite_run} non-finite steps in a row at step {step + 1} (max_nonfinite_steps="
                    f"{tc.max_nonfinite_steps}); stopped, the last good checkpoint is kept")
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        window.add({"loss": loss_sum / tc.grad_accum_steps, "grad_norm": grad_norm})
        window.tick()
        step += 1

        if step % tc.log_steps == 0 or step == steps_total:
            values = window.read()
            elapsed = time.perf_counter() - window_start
            tokens = float(window_tokens) * ctx.world_size
            values = {**values, "lr": lr, "tokens_per_s": tokens / max(elapsed, 1e-9),
                      "nonfinite_steps": nonfinite_total, **task.step_log(step - 1)}
            if compiled is not None:
                values["compile_s"] = compiled.seconds
            logger.log(step, "train", values)
            news = compiled.news() if compiled is not None else None
            if news:
                logger.event(news)
            window_start, window_tokens = time.perf_counter(), torch.zeros((), device=ctx.device)

        if step % tc.val_every == 0 or step == steps_total:
            with eval_weights(task, core):
                val = evaluate(model, task, task.val_batches(ctx), step, ctx.device, dtype)
                if sel.metric not in val:
                    raise KeyError(f"the task's validation metrics {sorted(val)} lack its selection metric "
                                   f"'{sel.metric}'")
                score = sel.score(val[sel.metric], val["loss"])
                improved = score > best
                if improved and rank0 and tc.save_best_model and files is not None:
                    _write_best(files, core, task, step, val, sel)
            logger.log(step, "val", val)
            result.last_val = val
            if val["loss"] < best_loss:
                best_loss = val["loss"]
            if improved:
                best, bad_evals = score, 0
            elif tc.eval_loss_patience > 0 and step >= tc.patience_grace_steps:
                bad_evals += 1
            stop = tc.eval_loss_patience > 0 and bad_evals >= tc.eval_loss_patience
            final = stop or step == steps_total
            meta = {"step": step, "final": final, "best_val_loss": best_loss, "val_loss": val["loss"],
                    "selection_metric": sel.metric, "selection_mode": sel.mode, "best_metric": sel.value(best),
                    f"val_{sel.metric}": val[sel.metric]}
            state = None
            if rank0:
                state = {"model": core.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
                         "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(), "rng": rng_state(),
                         "data_position": _gather_positions(feed.state_dict(), ctx.world_size),
                         "step": step, "best_val_loss": best_loss, "selection_metric": sel.metric,
                         "best_metric": sel.value(best), "best_metric_loss": -best[1],
                         "evals_without_improvement": bad_evals,
                         "nonfinite_total": nonfinite_total, "task": task_state(task), "config": to_dict(cfg)}
            else:
                _gather_positions(feed.state_dict(), ctx.world_size)
            best_report = {} if sel.metric == "loss" else {f"best_val_{sel.metric}": sel.value(best)}
            reporter.report({"step": step, **{f"val_{k}": v for k, v in val.items()}, "best_val_loss": best_loss,
                             **best_report}, state, meta)
            window_start = time.perf_counter()
            if stop:
                logger.event(f"early stop at step {step}: validation {sel.metric} has not improved on the best "
                             f"{sel.value(best):.4f} for {bad_evals} evaluations")
                result.stopped_early = True
                break

    result.step, result.best_val_loss, result.nonfinite_steps = step, best_loss, nonfinite_total
    result.best_metric = sel.value(best)
    feed.close()  # a Ray Data iterator must not outlive Ray
    logger.close()
    return result


def _gather_positions(position: dict[str, int], world_size: int) -> list[dict[str, int]]:
    """Every rank's data position (rank order), so each rank resumes its own stream."""
    if world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [position]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, position)
    return gathered


def _write_best(files: RunFiles, model: nn.Module, task: Task, step: int, val: dict[str, float],
                sel: Selection) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_best_model(tmp, model.state_dict(), yaml.safe_dump(to_dict(task.cfg), sort_keys=False),
                         task.artifacts(), {"step": step, "selection_metric": sel.metric, "selection_mode": sel.mode,
                                            **{f"val_{k}": v for k, v in val.items()}})
        files.put_dir(tmp, BEST_MODEL_DIR)

