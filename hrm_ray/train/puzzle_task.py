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

import copy
import dataclasses
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from hrm_ray.config import Config, dataset_given, explicit_fields
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
from hrm_ray.models.puzzle import (
    COUNT_METRICS,
    ACTLossHead,
    PuzzleModelConfig,
    puzzle_embeddings,
    reduce_metrics,
)
from hrm_ray.models.registry import build_model
from hrm_ray.storage import resolve_input
from hrm_ray.train.data_feed import Batch, BatchFeed, EpochFeed, ray_shard_epochs
from hrm_ray.train.ema import EMA, AveragedWeights
from hrm_ray.train.optim import build_optimizer
from hrm_ray.train.run_plan import run_plan
from hrm_ray.train.sign_sgd import SparseEmbeddingSignSGD
from hrm_ray.train.task import StepOutput, WorkerContext, unwrap

DATA_FIELDS = ("vocab_size", "seq_len", "num_puzzle_identifiers")


def resolve_model(model: PuzzleModelConfig, meta: PuzzleDatasetMetadata) -> PuzzleModelConfig:
    """The model config with its data fields taken from the dataset (a vocab_size set explicitly must match)."""
    if model.vocab_size and model.vocab_size != meta.vocab_size:
        raise UserError(f"model.vocab_size: {model.vocab_size} differs from the dataset's vocab_size {meta.vocab_size}")
    resolved = dataclasses.replace(model, vocab_size=meta.vocab_size, seq_len=meta.seq_len,
                                   num_puzzle_identifiers=meta.num_puzzle_identifiers)
    try:
        return resolved.validate()
    except ValueError as exc:
        raise UserError(f"model: {exc}") from None


def build_puzzle_model(config: PuzzleModelConfig) -> ACTLossHead:
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


def worker_share(global_batch_size: int, workers: int) -> int:
    """One worker's share of `train.global_batch_size` (a UserError when it does not split evenly)."""
    try:
        return local_batch_size(global_batch_size, workers)
    except ValueError as exc:
        raise UserError(f"global_batch_size: {exc}") from None


DRY_RUN_BLANKS = 40


def dry_run_segment(cfg: Config, task_class: type) -> dict[str, float]:
    """One training segment (forward/backward from a fresh carry) of the configured puzzle model on a batch of
    `task_class.dry_batch(cfg)` examples: the first training batch of `data.dataset`, else generated Sudoku."""
    from hrm_ray.data.puzzles.demo import sudoku_batch
    from hrm_ray.data.puzzles.sudoku import sudoku_metadata
    from hrm_ray.train.dry_run import grad_norm, timed_backward

    torch.manual_seed(cfg.train.seed)
    size = task_class.dry_batch(cfg)
    if dataset_given(cfg.data.dataset):
        cfg = copy.deepcopy(cfg)
        cfg.train.global_batch_size, cfg.ray.num_workers = size, 1
        task_class.resolve(cfg)
        task = task_class(cfg)
        model, batch = task.build_model(), task.train_feed(WorkerContext()).next_batch()
    else:
        model = build_puzzle_model(resolve_model(cfg.model, sudoku_metadata(size)))
        batch = sudoku_batch(size, DRY_RUN_BLANKS, seed=cfg.train.seed)
    device = torch.device("cuda" if cfg.ray.use_gpu and torch.cuda.is_available() else "cpu")
    model.to(device).train()
    batch = {k: v.to(device) for k, v in batch.items()}
    (_, loss, sums, _), seconds = timed_backward(lambda: model(model.initial_carry(batch), batch), lambda o: o[1])
    samples, embeddings = sums["samples"], puzzle_embeddings(model)
    result = {"loss": loss, **{k: v / samples for k, v in sums.items() if k.endswith("_loss") or k.startswith("gate_")},
              "samples": samples, "grad_norm": grad_norm(list(model.parameters())),
              "parameters": torch.tensor(sum(p.numel() for p in model.parameters())),
              "puzzle_emb_parameters": torch.tensor(sum(e.weights.numel() for e in embeddings))}
    if embeddings:  # the table is a buffer: its looked-up rows are the leaf sign-SGD reads the gradient of
        result["puzzle_emb_grad_norm"] = grad_norm([e.local for e in embeddings if e.local is not None])
    return {**{k: float(v.detach()) for k, v in result.items()}, "seconds": seconds}


@torch.no_grad()
def run_to_halt(head: ACTLossHead, batch: Batch) -> tuple[Any, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Evaluate one batch from a fresh carry until every slot halted: (carry, metric sums, outputs)."""
    carry = head.initial_carry(batch)
    while True:
        carry, _, metrics, all_halted, outputs = head(carry, batch, return_outputs=True)
        if bool(all_halted):
            return carry, metrics, outputs


class PuzzleTask(AveragedWeights):
    eval_sum_keys = ("count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps", "lm_loss")
    name = "puzzle"  # the task a model family's registry entry names
    selection_metric, selection_mode = "exact_accuracy", "max"   # best-model/, patience, sweeps
    ddp_kwargs = {"broadcast_buffers": False}   # the puzzle embedding table is kept equal by sign-SGD

    def __init__(self, cfg: Config):
        """`cfg` as `resolve_config` returns it: the model's data fields, the per-worker batch size and the
        steps already derived from the dataset."""
        if cfg.task != self.name:
            raise UserError(f"task: PuzzleTask needs task={self.name}, got '{cfg.task}'")
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
        return run_plan(self.cfg).fixed_group

    def ray_datasets(self) -> dict[str, Any]:
        if not self.needs_ray_data():
            return {}
        from hrm_ray.data.puzzles.ray_run import run_train_dataset

        p, s = self.cfg.train, self.schedule
        return {"train": run_train_dataset(run_plan(self.cfg).data_path, p.global_batch_size,
                                           p.eval_interval or self.cfg.train.epochs, s.iterations, self.cfg.train.seed)}

    # before a task is built (class methods: hrm_ray.train.task_registry) -----------------------
    @classmethod
    def resolve(cls, cfg: Config) -> None:
        """The model's data fields (dataset.json), the per-worker batch and the schedule in steps: `train.steps`
        0 takes `epochs` group-based epochs, evaluated every `eval_interval` epochs."""
        if dataset_given(cfg.data.dataset):
            cfg.data.dataset = resolve_input(cfg.data.dataset, "--dataset")
        meta = load_dataset_split(cfg.data.dataset, "train").metadata
        load_dataset_split(cfg.data.dataset, cfg.data.test_split)
        cfg.model = resolve_model(cfg.model, meta)
        cfg.train.batch_size = worker_share(cfg.train.global_batch_size, run_plan(cfg).planned_workers)
        schedule = puzzle_schedule(cfg, meta)
        if cfg.train.steps == 0:
            cfg.train.steps, cfg.train.val_every = schedule.total_steps, schedule.steps_per_iteration

    @staticmethod
    def reads_ray_data(cfg: Config) -> bool:
        return True

    @staticmethod
    def global_batch(cfg: Config) -> tuple[int, str]:
        """`train.global_batch_size` examples, split over the ranks as one batch each."""
        return cfg.train.global_batch_size, "examples"

    @staticmethod
    def micro_batches(cfg: Config, world_size: int) -> int:
        """A rank runs its share of the global batch as one batch (one ACT carry slot per example)."""
        return cfg.train.grad_accum_steps

    @staticmethod
    def memory_batch(cfg: Config) -> int:
        workers = run_plan(cfg).planned_workers
        return max(1, cfg.train.global_batch_size // workers // max(1, cfg.train.grad_accum_steps))

    @staticmethod
    def memory_fix(cfg: Config, factor: int) -> str:
        return (f"a smaller --global_batch_size (about {cfg.train.global_batch_size // factor}) or more "
                f"--num_workers to share it")

    @staticmethod
    def probe_batch(cfg: Config, size: int) -> Batch:
        """`size` examples of random tokens at the model's sequence length (hrm_ray.train.memory)."""
        generator = torch.Generator().manual_seed(0)
        tokens = torch.randint(1, cfg.model.vocab_size, (size, cfg.model.seq_len), generator=generator)
        return {"inputs": tokens, "labels": tokens.clone(), "puzzle_identifiers": torch.zeros(size, dtype=torch.long)}

    @staticmethod
    def probe_forward(model: nn.Module, batch: Batch) -> None:
        model(model.initial_carry(batch), batch)

    @staticmethod
    def dry_batch(cfg: Config) -> int:
        """`--batch_size` when given, else one worker's share of a given `global_batch_size`, else the dry
        run's small batch (the paper's 768 on one CPU needs tens of GiB)."""
        from hrm_ray.train.dry_run import dry_batch

        given = explicit_fields(cfg.train)
        if "global_batch_size" in given and "batch_size" not in given:
            return worker_share(cfg.train.global_batch_size, run_plan(cfg).planned_workers)
        return dry_batch(cfg)

    @classmethod
    def dry_run(cls, cfg: Config) -> str:
        """One ACT segment on the first training batch of `data.dataset` (generated Sudoku without one), as text."""
        from hrm_ray.train.dry_run import format_dry_run

        result = dry_run_segment(cfg, cls)
        what = f"a training batch of {cfg.data.dataset}" if dataset_given(cfg.data.dataset) else "generated Sudoku"
        return format_dry_run(result, what)

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
        self.ema = (EMA(model, p.ema_decay, include_buffers=p.ema_puzzle_emb, warmup=p.ema_warmup)
                    if p.ema else None)
        return optimizers


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
        meta = {"task": self.name, "model": self.cfg.model.name, "data_path": self.cfg.data.dataset,
                "ema": self.cfg.train.ema, "dataset": dataclasses.asdict(self.meta)}
        return {"meta.json": json.dumps(meta).encode()}
