"""The puzzle HRM (ACT v1, its gated variant, the plain-transformer baseline, or the Tiny Recursive Model)
as a Task of the loop.

The paper's terms map onto the loop's: `train.epochs` are group-based epochs (one puzzle per group),
`train.eval_interval` epochs make one iteration between evaluations, so resolving the config
(hrm_ray.train.resolve) sets `train.steps = iterations x steps per iteration` and `train.val_every =
steps per iteration` (an explicit `train.steps > 0` keeps the loop's own steps/val_every), and splits
`train.global_batch_size` across workers. One `head(carry, batch)` segment runs per optimizer step; the carry stays
across batches (halted slots take the next example) and is re-initialised when a run (re)starts.
Optimisers: the configured dense one (adam_atan2 in the puzzle configs) and sign-SGD for the
puzzle embedding, each with its own lr/weight decay and the same warmup + cosine + lr_min_ratio.
Intermediate evaluations run a fixed random subset of the test split (`train.eval_subset`) with a
95% interval on exact accuracy; the final evaluation runs every test example.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hrm_ray.config import Config, dataset_given
from hrm_ray.data.puzzles.format import (
    IGNORE_LABEL_ID,
    PuzzleDatasetMetadata,
    PuzzleSplit,
    collate,
    load_split,
)
from hrm_ray.data.puzzles.sampler import GroupEpochSampler, local_batch_size, num_iterations
from hrm_ray.errors import UserError
from hrm_ray.evals.runner import wilson_interval
from hrm_ray.models.hrm_act_v1 import ACTLossHead, HRMACTv1Config, puzzle_embeddings
from hrm_ray.models.hrm_act_v1.losses import COUNT_METRICS, reduce_metrics
from hrm_ray.models.registry import build_model
from hrm_ray.train.data_feed import Batch, BatchFeed, EpochFeed, ray_shard_epochs
from hrm_ray.train.ema import EMA
from hrm_ray.train.optim import build_optimizer
from hrm_ray.train.sign_sgd import SparseEmbeddingSignSGD
from hrm_ray.train.task import StepOutput, WorkerContext, unwrap

DATA_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")


def resolve_model(model: HRMACTv1Config, meta: PuzzleDatasetMetadata) -> HRMACTv1Config:
    """The model config with its data fields taken from the dataset (a vocab_size set explicitly must match)."""
    if model.vocab_size and model.vocab_size != meta.vocab_size:
        raise UserError(f"model.vocab_size: {model.vocab_size} differs from the dataset's vocab_size {meta.vocab_size}")
    resolved = dataclasses.replace(model, vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                                   num_puzzle_identifiers=meta.num_puzzle_identifiers)
    try:
        return resolved.validate()
    except ValueError as exc:
        raise UserError(f"model: {exc}") from None


def build_puzzle_model(config: HRMACTv1Config) -> ACTLossHead:
    return ACTLossHead(build_model(config), loss_type=config.loss_type)


def load_dataset_split(data_path: str, split: str) -> PuzzleSplit:
    if not dataset_given(data_path):
        raise UserError("data.dataset (data_path=...): no puzzle dataset given (build one with hrm-ray puzzle-data)")
    try:
        return load_split(data_path, split)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(f"data.dataset: {exc}") from None


@dataclasses.dataclass
class PuzzleSchedule:
    iterations: int
    steps_per_iteration: int
    total_steps: int


def puzzle_schedule(cfg: Config, meta: PuzzleDatasetMetadata) -> PuzzleSchedule:
    """Steps of `train.epochs` group-based epochs, evaluated every `train.eval_interval` epochs."""
    p = cfg.train
    try:
        iterations = num_iterations(cfg.train.epochs, p.eval_interval or None)
    except ValueError as exc:
        raise UserError(f"epochs/eval_interval: {exc}") from None
    interval = p.eval_interval or cfg.train.epochs
    per_iter = int(interval * meta.total_groups * meta.mean_puzzle_examples) // p.global_batch_size
    if per_iter == 0:
        raise UserError(f"global_batch_size ({p.global_batch_size}) is larger than {interval} epochs of "
                        f"{meta.total_groups * meta.mean_puzzle_examples:g} examples: no training step")
    return PuzzleSchedule(iterations, per_iter, iterations * per_iter)


def eval_rows(split: PuzzleSplit, size: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(set, example indices) of the evaluation: every example, or a fixed random subset of `size`."""
    sets = [(name, np.arange(pset.num_examples)) for name, pset in split.sets.items()]
    total = sum(len(ex) for _, ex in sets)
    if size <= 0 or size >= total:
        return sets
    pick = np.sort(np.random.default_rng(seed).choice(total, size, replace=False))
    out, offset = [], 0
    for name, ex in sets:
        mine = pick[(pick >= offset) & (pick < offset + len(ex))] - offset
        if len(mine):
            out.append((name, mine))
        offset += len(ex)
    return out


def eval_subset_batches(split: PuzzleSplit, rows: list[tuple[str, np.ndarray]], local_size: int, rank: int,
                        world_size: int) -> Iterator[tuple[str, np.ndarray, Batch]]:
    """(set, example indices, batch) for this rank's slice of each global batch of `rows`; a short batch
    is padded to `local_size` with label-less rows (they count in no metric)."""
    meta, global_size = split.metadata, local_size * world_size
    for name, examples in rows:
        pset = split.sets[name]
        for start in range(0, len(examples), global_size):
            ex = examples[start + rank * local_size:start + (rank + 1) * local_size]
            puzzles = np.searchsorted(pset.puzzle_indices, ex, side="right") - 1
            batch = collate(pset.inputs[ex], pset.labels[ex], pset.puzzle_identifiers[puzzles], meta)
            pad = local_size - len(ex)
            if pad:
                fill = {"inputs": meta.pad_id, "labels": IGNORE_LABEL_ID, "puzzle_identifiers": meta.blank_identifier_id}
                batch = {k: torch.cat([v, torch.full((pad, *v.shape[1:]), fill[k], dtype=v.dtype)])
                         for k, v in batch.items()}
            yield name, ex, batch


@torch.no_grad()
def run_to_halt(head: ACTLossHead, batch: Batch) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Evaluate one batch from a fresh carry until every slot halted: (carry, metric sums, outputs)."""
    carry = head.initial_carry(batch)
    while True:
        carry, _, metrics, all_halted, outputs = head(carry, batch, return_outputs=True)
        if bool(all_halted):
            return carry, metrics, outputs


class PuzzleTask:
    eval_sum_keys = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss")
    selection_metric, selection_mode = "exact_accuracy", "max"   # best-model/, patience, sweeps
    ddp_kwargs = {"broadcast_buffers": False}   # the puzzle embedding table is kept equal by sign-SGD

    def __init__(self, cfg: Config):
        """`cfg` as `resolve_config` returns it: the model's data fields, the per-worker batch size and the
        steps already derived from the dataset."""
        if cfg.task != "puzzle":
            raise UserError(f"task: PuzzleTask needs task=puzzle, got '{cfg.task}'")
        self.cfg = cfg
        self._load_splits(cfg.data)
        data_fields = (self.meta.vocab_size, self.meta.seq_len, self.meta.num_puzzle_identifiers)
        if (cfg.model.vocab_size, cfg.model.seq_len, cfg.model.num_puzzle_identifiers) != data_fields or not cfg.train.steps:
            raise ValueError("PuzzleTask needs a resolved config (hrm_ray.train.resolve.resolve_config)")
        self.schedule = puzzle_schedule(cfg, self.meta)
        self.eval_rows = eval_rows(self.test, cfg.train.eval_subset, seed=cfg.train.seed)
        self.ema: EMA | None = None
        self._reset_run_state()

    def _load_splits(self, data: Any) -> None:
        self.split = load_dataset_split(data.dataset, "train")
        self.meta = self.split.metadata
        self.test = load_dataset_split(data.dataset, data.test_split)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled to the workers without the memory-mapped arrays: each worker maps the files itself."""
        return {k: v for k, v in self.__dict__.items() if k not in ("split", "test")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._load_splits(self.cfg.data)

    def _reset_run_state(self) -> None:
        self.carry = None
        self.next_step = 0
        self.window: dict[str, torch.Tensor] = {}

    # driver side -------------------------------------------------------------------------------
    def needs_ray_data(self) -> bool:
        """A fixed worker group streams Ray Data shards. In-process, and in an elastic group, the sampler
        reads the memory-mapped split directly: its global batches do not depend on the number of workers
        (each rank takes its share), so the position (iteration, batch) is global and a resize neither
        repeats nor skips; and no Ray Data task waits for a CPU that the grown group has taken."""
        return self.cfg.ray.num_workers > 0 and not self.cfg.ray.min_workers

    def ray_datasets(self) -> dict[str, Any]:
        if not self.needs_ray_data():
            return {}
        from hrm_ray.data.puzzles.ray_run import run_train_dataset

        p, s = self.cfg.train, self.schedule
        return {"train": run_train_dataset(str(Path(self.cfg.data.dataset).resolve()), p.global_batch_size,
                                           p.eval_interval or self.cfg.train.epochs, s.iterations, self.cfg.train.seed)}

    # model -------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        self._reset_run_state()
        return build_puzzle_model(self.cfg.model)

    def build_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        """The dense optimizer, sign-SGD over the puzzle embedding, and (train.ema) the weights' EMA."""
        p, o = self.cfg.train, self.cfg.optim
        # Weight decay on every parameter, 1-D ones included, as the HRM and TRM papers' code does.
        optimizers = [build_optimizer(model.parameters(), self.cfg.optim, decay_1d=True)]
        embeddings = puzzle_embeddings(model)
        if embeddings:
            optimizers.append(SparseEmbeddingSignSGD(embeddings, lr=o.puzzle_emb_lr, weight_decay=o.puzzle_emb_weight_decay))
        self.ema = EMA(model, p.ema_decay, include_buffers=p.ema_puzzle_emb) if p.ema else None
        return optimizers

    def after_step(self, model: nn.Module, step: int) -> None:
        if self.ema is not None:
            self.ema.update(model)

    def eval_weights(self, model: nn.Module) -> contextlib.AbstractContextManager:
        """Evaluation and best-model/ use the EMA weights when train.ema is on."""
        return self.ema.swapped_in(model) if self.ema is not None else contextlib.nullcontext(model)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])

    def frozen_parameters(self, model: nn.Module, step: int) -> list[nn.Parameter]:
        return []

    def step_log(self, step: int) -> dict[str, float]:
        """accuracy / exact_accuracy / q_halt_accuracy / steps over the sequences that halted in the
        logging window (ratios of sums: a window where few slots halt is not over-weighted), and the epoch
        reached at the end of `step`."""
        epoch = {"epoch": self.epoch_at(step + 1)}
        if not self.window:
            return epoch
        keys = list(self.window)
        sums = dict(zip(keys, torch.stack([self.window[k] for k in keys]).tolist(), strict=True))
        self.window = {}
        if sums["count"] == 0:  # no sequence halted in this window
            return {"count": 0.0, **epoch}
        return {**{k: v for k, v in reduce_metrics(sums).items() if k in (*COUNT_METRICS, "count")}, **epoch}

    def epoch_at(self, steps_done: int) -> float:
        """Group-based epochs done after `steps_done` steps (each eval cycle of `eval_interval` epochs ends
        on a whole epoch: its incomplete last batch is dropped)."""
        interval = self.cfg.train.eval_interval or self.cfg.train.epochs
        cycles, rest = divmod(steps_done, self.schedule.steps_per_iteration)
        return round(cycles * interval + rest * interval / self.schedule.steps_per_iteration, 3)

    # data --------------------------------------------------------------------------------------
    def train_samples(self) -> int:
        return int(self.meta.total_groups * self.meta.mean_puzzle_examples)

    def train_feed(self, ctx: WorkerContext) -> BatchFeed:
        t = p = self.cfg.train
        if "train" in ctx.shards:
            from hrm_ray.data.puzzles.ray_run import PuzzleBatchCollate

            size = local_batch_size(p.global_batch_size, ctx.world_size)
            return EpochFeed(ray_shard_epochs(ctx.shards["train"], size, PuzzleBatchCollate(), t.seed))
        sampler = GroupEpochSampler(self.split, p.global_batch_size, p.eval_interval or t.epochs, t.seed,
                                    ctx.rank, ctx.world_size)
        return EpochFeed(sampler.batches)

    def is_final_eval(self) -> bool:
        return self.next_step >= self.cfg.train.steps

    def val_batches(self, ctx: WorkerContext) -> Iterable[Batch]:
        rows = eval_rows(self.test, 0, 0) if self.is_final_eval() else self.eval_rows
        batches = eval_subset_batches(self.test, rows, self.cfg.train.eval_batch_size, ctx.rank, ctx.world_size)
        return (batch for _, _, batch in batches)

    # losses ------------------------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: Batch, step: int) -> StepOutput:
        if self.carry is None:
            self.carry = unwrap(model).initial_carry(batch)
        self.carry, loss, sums, _ = model(self.carry, batch)
        self.next_step = step + 1
        for key in (*COUNT_METRICS, "count"):
            self.window[key] = self.window.get(key, 0) + sums[key]
        samples = sums["samples"]
        metrics = {k: v / samples for k, v in sums.items()
                   if k.endswith("_loss") or k.startswith("gate_")}
        return StepOutput(loss, metrics, batch["inputs"].numel())

    def eval_sums(self, model: nn.Module, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        _, sums, _ = run_to_halt(unwrap(model), batch)
        return {k: sums[k] for k in self.eval_sum_keys}

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Means over the evaluated examples; `loss` is the LM loss. exact_accuracy comes with its 95%
        interval for the population of the whole test split (a point when all of it was evaluated)."""
        n = max(sums["count"], 1.0)
        out = {k: sums[k] / n for k in COUNT_METRICS}
        out["loss"] = sums["lm_loss"] / n
        population = sum(pset.num_examples for pset in self.test.sets.values())
        low, high = wilson_interval(sums["exact_accuracy"], sums["count"], population)
        out.update(exact_accuracy_ci_low=low, exact_accuracy_ci_high=high, examples=sums["count"])
        return out

    def artifacts(self) -> dict[str, bytes]:
        meta = {"task": "puzzle", "model": self.cfg.model.name, "data_path": self.cfg.data.dataset,
                "ema": self.cfg.train.ema, "dataset": dataclasses.asdict(self.meta)}
        return {"meta.json": json.dumps(meta).encode()}
