"""The model-agnostic contract between the training loop and what it trains.

A `Task` owns the model, its data and its losses; the loop owns optimisation, precision, schedules,
checkpoints, validation and logging. `LanguageModelTask` (hrm_ray/train/lm_task.py) trains the HRM×LM
hybrid; the puzzle HRM implements the same protocol.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from hrm_ray.config import Config
from hrm_ray.train.data_feed import Batch, BatchFeed
from hrm_ray.train.global_batch import global_batch, micro_batches


@dataclass
class StepOutput:
    """One micro-batch's result. `metrics` are detached 0-dim tensors (no host sync); the loop averages
    them over the logging window (keys ending in `_min`/`_max` take the window's min/max)."""
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    num_tokens: torch.Tensor | int = 0


@dataclass
class WorkerContext:
    """Where the loop runs: rank, world size, device, the Ray Dataset shards (in-process: none, or the
    task's Ray Datasets when its data needs Ray Data) and the Ray node id of this rank ("" without Ray)."""
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    shards: dict[str, Any] = field(default_factory=dict)
    node_id: str = ""


class Task(Protocol):
    cfg: Config   # as hrm_ray.train.resolve.resolve_config returns it; a task never writes to it
    # Names of the additive sums `eval_sums` returns (all-reduced across ranks in this order).
    eval_sum_keys: tuple[str, ...]
    # The validation metric that picks best-model/ and drives early stopping, and whether lower ("min")
    # or higher ("max") is better: ("loss", "min") for the LM, ("exact_accuracy", "max") for puzzles.
    selection_metric: str
    selection_mode: str

    def ray_datasets(self) -> dict[str, Any]:
        """Driver side, Ray up: Ray Datasets to shard across workers ({} when the data is read in-process)."""

    def build_model(self) -> nn.Module:
        """A fresh model on the CPU (the loop moves it and wraps it for DDP)."""

    def build_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        """Optimizers over the model's parameters (usually one; the puzzle HRM adds sign-SGD)."""

    def train_samples(self) -> int:
        """Training samples in one epoch (turns `--epochs` into steps)."""

    def train_feed(self, ctx: WorkerContext) -> BatchFeed:
        """This rank's endless, resumable stream of training batches."""

    def val_batches(self, ctx: WorkerContext) -> Iterable[Batch]:
        """This rank's share of the validation set (at most `max_val_samples` in all), once."""

    def forward(self, model: nn.Module, batch: Batch, step: int) -> StepOutput:
        """Loss and metrics of one training micro-batch at optimizer step `step`."""

    def eval_sums(self, model: nn.Module, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        """Additive quantities of one validation batch (e.g. loss summed over tokens, token count)."""

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Validation metrics from the summed quantities; must contain `loss` (lower is better) and the
        selection metric."""

    def frozen_parameters(self, model: nn.Module, step: int) -> list[nn.Parameter]:
        """Parameters that get no update (and no weight decay) at `step`."""

    def step_log(self, step: int) -> dict[str, float]:
        """Schedule values worth logging at `step` (e.g. the gate scale)."""

    def artifacts(self) -> dict[str, bytes]:
        """Extra files for best-model/ (tokenizer.json, meta.json of the data, ...)."""

    # Optional hooks (the loop calls them through the functions below; a task without them gets the
    # defaults, which is what the LM task uses):
    #   after_step(model, step)      after each applied optimizer step (e.g. update an EMA of the weights)
    #   eval_weights(model)          context manager around validation and best-model/ (e.g. EMA swapped in)
    #   state_dict() / load_state_dict(state)   task state that goes into checkpoints (e.g. the EMA)
    #   ddp_kwargs                   extra DistributedDataParallel arguments (e.g. broadcast_buffers=False)
    #   needs_ray_data()             whether `ray_datasets()` returns any (then Ray must be up, also in-process)
    #   micro_batches(cfg, world)    class method: micro-batches per rank and step (default: the loop's global
    #                                batch, hrm_ray.train.global_batch); global_batch(cfg): its size and units
    #
    # What a task does before one is built is a class method of the built-in tasks (a family names its task in
    # the model registry; hrm_ray.train.task_registry maps the name to the class):
    #   name                         the task name a family's registry entry gives ("lm", "puzzle")
    #   resolve(cfg)                 fill in what the data decides (resolve_config calls it on its copy)
    #   reads_ray_data(cfg)          whether a run with Ray Train workers reads a Ray Dataset
    #   probe_batch(cfg, size), probe_forward(model, batch), memory_batch(cfg), memory_fix(cfg, factor)
    #                                the memory estimate (hrm_ray.train.memory); a task without them is not probed
    #   dry_run(cfg)                 `hrm-ray train --dry_run`: one forward/backward, its report as text


SELECTION_MODES = ("min", "max")


@dataclass(frozen=True)
class Selection:
    """Which validation metric picks the best evaluation, and whether lower or higher is better.

    An evaluation's `score` orders evaluations (larger is better): the metric, then the lower validation
    loss, which breaks ties of a coarse metric (an exact accuracy that stays 0 early in training). For
    ("loss", "min") it orders by loss alone. A NaN never scores better."""
    metric: str = "loss"
    mode: str = "min"

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise ValueError(f"selection_mode must be min or max, got {self.mode!r}")

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def score(self, value: float, loss: float) -> tuple[float, float]:
        return (value if self.mode == "max" else -value, -loss)

    def value(self, score: tuple[float, float]) -> float:
        return score[0] if self.mode == "max" else -score[0]


LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error", "err", "nll")


def selection_mode(metric: str) -> str:
    """Whether a metric named by `train.select_on` is better lower ("min": its last word is loss, perplexity,
    ppl, error, err or nll, e.g. math/loss, val_loss) or higher ("max": exact_match, accuracy, f1, pass@1 ...)."""
    last = metric.rsplit("/", 1)[-1].rsplit("_", 1)[-1].lower()
    return "min" if last in LOWER_IS_BETTER else "max"


def selection_metric_name(select_on: str) -> str:
    """`train.select_on` as the loop's merged metrics name it: a leading val/ or eval/ (the W&B names) dropped."""
    for prefix in ("val/", "eval/"):
        if select_on.startswith(prefix):
            return select_on[len(prefix):]
    return select_on


def selection(task: Task) -> Selection:
    """The task's selection metric and mode (a task without them is selected by validation loss), or the
    metric its config's `train.select_on` names, whose mode follows from its name (`selection_mode`)."""
    own = Selection(getattr(task, "selection_metric", "loss"), getattr(task, "selection_mode", "min"))
    cfg = getattr(task, "cfg", None)
    chosen = selection_metric_name(cfg.train.select_on) if isinstance(cfg, Config) else ""
    if not chosen or chosen == own.metric:
        return own
    return Selection(chosen, selection_mode(chosen))


def after_step(task: Task, model: nn.Module, step: int) -> None:
    hook = getattr(task, "after_step", None)
    if hook is not None:
        hook(model, step)


def eval_weights(task: Task, model: nn.Module) -> contextlib.AbstractContextManager:
    hook = getattr(task, "eval_weights", None)
    return hook(model) if hook is not None else contextlib.nullcontext(model)


def task_state(task: Task) -> dict[str, Any]:
    hook = getattr(task, "state_dict", None)
    return hook() if hook is not None else {}


def load_task_state(task: Task, state: dict[str, Any]) -> None:
    hook = getattr(task, "load_state_dict", None)
    if hook is not None:
        hook(state)


def needs_ray_data(task: Task) -> bool:
    hook = getattr(task, "needs_ray_data", None)
    return bool(hook()) if hook is not None else False


def rank_micro_batches(task: Task, world_size: int) -> int:
    """Micro-batches per rank and optimizer step: the task's own split, else the loop's global batch."""
    hook = getattr(task, "micro_batches", None)
    return hook(task.cfg, world_size) if hook is not None else micro_batches(task.cfg, world_size)


def task_global_batch(task: Task | type, cfg: Config) -> tuple[int, str]:
    """The global batch of a task (or Task class) in the units it is split over workers, and their name."""
    hook = getattr(task, "global_batch", None)
    return hook(cfg) if hook is not None else global_batch(cfg)


def ddp_kwargs(task: Task) -> dict[str, Any]:
    return dict(getattr(task, "ddp_kwargs", {}))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel and torch.compile wrappers (or the model itself): the one
    whose state dict has the model's own names (no `module.` or `_orig_mod.` prefix)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    return model._orig_mod if isinstance(model, torch._dynamo.eval_frame.OptimizedModule) else model
