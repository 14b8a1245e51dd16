"""Whether a run fits the memory of the node it runs on, known before it starts.

A worker holds the parameters, their gradients, the optimizer's state and, during backward, the activations
autograd saved in forward. The activations are measured: a small probe batch (PROBE_BATCH examples of the
run's full sequence length) runs forward under `saved_tensors_hooks`, which sees every tensor kept for
backward; per example, times the worker's micro-batch. A run whose estimate exceeds the node's memory fails
at once with one line proposing gradient accumulation or a smaller batch, instead of growing until the OS
kills it without a word. The node's memory: $HRM_RAY_NODE_MEMORY_GB when set (tests, or to leave room for
other work), else the Ray nodes' memory, else this machine's (/proc/meminfo).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch import nn

from hrm_ray.config import Config
from hrm_ray.errors import UserError
from hrm_ray.train.task_registry import task_class

NODE_MEMORY_ENV = "HRM_RAY_NODE_MEMORY_GB"
PROBE_BATCH = 2
GIB = 1024 ** 3
OPTIMIZER_STATE = {"adamw": 8.0, "adam_atan2": 8.0, "adamw_8bit": 2.0}  # bytes per parameter (2 moments)
OVERHEAD = 1.2  # allocator slack, temporaries of backward, the data in flight


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: float
    gradients: float
    optimizer: float
    activations: float
    batch: int

    @property
    def total(self) -> float:
        return (self.parameters + self.gradients + self.optimizer + self.activations) * OVERHEAD

    def describe(self) -> str:
        return (f"about {gib(self.total)} per worker: parameters {gib(self.parameters)}, gradients "
                f"{gib(self.gradients)}, optimizer {gib(self.optimizer)}, activations {gib(self.activations)} "
                f"for a micro-batch of {self.batch}")


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def saved_activation_bytes(model: nn.Module, forward) -> int:
    """Bytes of the tensors autograd saves for backward while `forward()` runs (parameters excluded; a storage
    counted once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(seen.values())


def memory_batch(cfg: Config) -> int:
    """Examples one worker runs through forward at once: the task's (`memory_batch`), else `train.batch_size`."""
    hook = getattr(task_class(cfg), "memory_batch", None)
    return hook(cfg) if hook is not None else cfg.train.batch_size


def estimate_memory(cfg: Config, model: nn.Module, batch: int | None = None) -> MemoryEstimate:
    """The estimate of one worker of `cfg` (its micro-batch, or `batch`) for `model` (built on the CPU)."""
    task = task_class(cfg)
    batch = batch or memory_batch(cfg)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.train()
    with torch.random.fork_rng():
        saved = saved_activation_bytes(model, lambda: task.probe_forward(model, task.probe_batch(cfg, PROBE_BATCH)))
    return MemoryEstimate(parameters=params, gradients=trainable * 4.0,
                          optimizer=trainable * OPTIMIZER_STATE.get(cfg.optim.optimizer, 8.0),
                          activations=saved / PROBE_BATCH * batch, batch=batch)


def node_memory_bytes(workers_per_node: int = 1) -> float:
    """Memory one worker may use: $HRM_RAY_NODE_MEMORY_GB, else the largest Ray node's (when Ray is up), else
    this machine's, shared by the workers placed on that node."""
    given = os.environ.get(NODE_MEMORY_ENV, "").strip()
    if given:
        try:
            return float(given) * GIB / workers_per_node
        except ValueError:
            raise UserError(f"${NODE_MEMORY_ENV}: {given!r} is not a number of GiB") from None
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        memory = [float(n["Resources"].get("memory", 0.0)) for n in ray.nodes() if n.get("Alive")]
        if max(memory, default=0.0) > 0:
            return max(memory) / workers_per_node
    return machine_memory() / workers_per_node


def machine_memory() -> float:
    """This machine's memory in bytes (MemTotal of /proc/meminfo; sysconf elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def check_fits(cfg: Config, estimate: MemoryEstimate, workers_per_node: int = 1) -> None:
    """A UserError (one line) when the estimate exceeds what a worker's node has for it."""
    budget = node_memory_bytes(workers_per_node)
    if estimate.total <= budget:
        return
    factor = math.ceil(estimate.total / budget * 1.1)
    smaller = max(1, estimate.batch // factor)
    hook = getattr(task_class(cfg), "memory_fix", None)
    fix = hook(cfg, factor) if hook is not None else (
        f"--grad_accum_steps {factor * max(1, cfg.train.grad_accum_steps)} --batch_size {smaller} (the same global "
        f"batch in micro-batches) or a smaller --batch_size")
    raise UserError(f"the run does not fit in memory: it needs {estimate.describe()}, a worker's node has "
                    f"{gib(budget)}: use {fix}")


def check_run_memory(cfg: Config, build_model, workers_per_node: int = 1) -> MemoryEstimate:
    """Build the model on the CPU, measure, and raise when one worker of `cfg` cannot fit its node."""
    with torch.device("cpu"):
        model = build_model()
    estimate = estimate_memory(cfg, model)
    del model
    check_fits(cfg, estimate, workers_per_node)
    return estimate
