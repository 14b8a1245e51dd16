"""The HRM×LM task: the hybrid model on synthetic arithmetic, a prepared dataset, or a weighted mix.

Built on the driver from the resolved config (hrm_ray.train.resolve) and pickled to every worker; the
Ray Datasets themselves travel separately through `ray_datasets()` -> TorchTrainer(datasets=...). In-process
(`--num_workers 0`) a prepared dataset is read from its files directly (hrm_ray.train.parquet_feed); only a
mixture of datasets needs Ray Data there.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrm_ray.config import SYNTHETIC, Config
from hrm_ray.data.synthetic import arithmetic_pairs, char_tokenizer, make_triplets, pad_batch
from hrm_ray.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from hrm_ray.errors import UserError
from hrm_ray.models.lm import IGNORE_INDEX, ModelOutput, example_ce_sums
from hrm_ray.models.registry import build_model
from hrm_ray.storage import join, resolve_input
from hrm_ray.train.data_feed import (
    Batch,
    BatchFeed,
    EpochFeed,
    GlobalBatchFeed,
    IndexedFeed,
    indexed_batches,
    ray_shard_epochs,
)
from hrm_ray.train.ema import EMA, AveragedWeights
from hrm_ray.train.gate_schedule import gate_scale
from hrm_ray.train.global_batch import micro_batches
from hrm_ray.train.mixture_feed import mixture_feed
from hrm_ray.train.optim import build_optimizer
from hrm_ray.train.parquet_feed import parquet_batches, parquet_epochs, split_rows, table_rows
from hrm_ray.train.run_plan import run_plan
from hrm_ray.train.task import StepOutput, WorkerContext, unwrap

SOURCE_GATE = "gate_src_"  # metric prefix of each mixture source's mean gate
SYNTHETIC_SPLIT_SEED = 0  # fixed: which problems are held out never depends on the training seed
SHUFFLE_BUFFER = 2048


@dataclasses.dataclass
class DataInfo:
    """What the workers need to know about the data (no Ray objects)."""
    kind: str  # synthetic | prepared | mixture
    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    train_samples: int
    tokenizer_json: str
    sources: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def describe_data(cfg: Config) -> DataInfo:
    """Driver side: tokenizer, special ids and sizes of `cfg.data.dataset` (from meta.json, else the files'
    row counts; a mixture's size from its quota plan): no Ray."""
    spec = cfg.data.dataset
    if spec == SYNTHETIC:
        tok = char_tokenizer()
        return DataInfo(SYNTHETIC, tok.get_vocab_size(), PAD_ID, BOS_ID, EOS_ID, cfg.data.synthetic_train_size,
                        tok.to_str(), meta={"dataset": SYNTHETIC, "max_operand": cfg.data.synthetic_max_operand})
    from hrm_ray.data.ingest import parse_dataset_spec, read_meta
    from hrm_ray.data.meta import read_dataset_file

    specs = parse_dataset_spec(spec)
    metas = [read_meta(path) for path, _ in specs]
    first = metas[0]
    tokenizer_json = read_dataset_file(first.path, "tokenizer.json")
    available = [m.train_samples if m.train_samples is not None else split_rows(m.path, "train") for m in metas]
    if len(specs) == 1:
        return DataInfo("prepared", first.vocab_size, first.pad_id, first.bos_id, first.eos_id, int(available[0]),
                        tokenizer_json, meta=first.raw)
    from hrm_ray.data.meta import check_same_tokenizer
    from hrm_ray.data.quotas import plan_mix

    check_same_tokenizer(metas)
    plan = plan_mix([p for p, _ in specs], [w for _, w in specs], available, None)  # as mix_datasets plans it
    return DataInfo("mixture", first.vocab_size, first.pad_id, first.bos_id, first.eos_id,
                    sum(e["quota"] for e in plan), tokenizer_json, sources=[Path(p).name for p, _ in specs],
                    meta={**first.raw, "mixture": plan})


def absolute_dataset_spec(spec: str, resolve: Callable[[str], str] | None = None) -> str:
    """Local dataset paths of a `--dataset` spec (`PATH` or `PATH:WEIGHT,...`) made absolute by `resolve`
    (default: `hrm_ray.storage.resolve_input`, relative to where the command runs)."""
    from hrm_ray.data.ingest import parse_dataset_spec

    resolve = resolve or (lambda path: resolve_input(path, "--dataset"))
    specs = parse_dataset_spec(spec)
    paths = [resolve(p) for p, _ in specs]
    if len(specs) == 1 and ":" not in spec.rsplit("/", 1)[-1]:
        return paths[0]
    return ",".join(f"{p}:{w:g}" for p, (_, w) in zip(paths, specs, strict=True))


def check_vocab(model_vocab: int, data_vocab: int, where: str) -> None:
    """An explicit model.vocab_size must be the data's (0 takes the data's)."""
    if model_vocab and model_vocab != data_vocab:
        raise UserError(f"{where}: vocab_size {data_vocab} does not match the model's vocab_size {model_vocab} "
                        f"(data of another tokenizer? model.vocab_size 0 takes the dataset's)")


def check_data(cfg: Config) -> None:
    """Driver side, before Ray starts: each prepared dataset (a directory or a URI) has a readable meta.json
    whose vocabulary is the model's."""
    if cfg.data.dataset == SYNTHETIC:
        return
    from hrm_ray.data.ingest import parse_dataset_spec, read_meta

    for path, _ in parse_dataset_spec(cfg.data.dataset):
        check_vocab(cfg.model.vocab_size, read_meta(path).vocab_size, join(path, "meta.json"))


def source_counts(source_id: torch.Tensor, sources: int) -> torch.Tensor:
    """How many rows came from each source, as floats; unlike bincount, no host sync on CUDA."""
    counts = torch.zeros(sources, dtype=torch.float32, device=source_id.device)
    return counts.index_add_(0, source_id.long(), torch.ones_like(source_id, dtype=torch.float32))


def source_gates(source_id: torch.Tensor, gate: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Each source's mean effective gate over its rows of the batch (`counts` from `source_counts`), no host
    sync; a source absent from the batch takes the batch's mean, so a rare source's logged curve leans
    slightly toward the overall gate rather than toward 0."""
    gate = gate.detach().float()
    sums = torch.zeros_like(counts).index_add_(0, source_id.long(), gate)
    return torch.where(counts > 0, sums / counts.clamp_min(1.0), gate.mean())


SOURCE_SUMS = ("loss_sum", "tokens", "rows", "gate_sum")  # per source of a mixture, summed over validation


def source_sum_keys(sources: list[str]) -> tuple[str, ...]:
    return tuple(f"{name}/{part}" for name in sources for part in SOURCE_SUMS)


def source_eval_sums(out: ModelOutput, labels: torch.Tensor, source_id: torch.Tensor | None,
                     sources: list[str]) -> dict[str, torch.Tensor]:
    """Each source's share of one validation batch (float64, no host sync): the last cycle's cross-entropy
    summed over its rows' tokens (what "ce" averages), its tokens, its rows and their effective gate."""
    if source_id is None:
        raise ValueError("a mixture's validation batch has no source_id column")
    ce = example_ce_sums(out.logits, labels).double()
    index = source_id.long().to(ce.device)

    def per_source(values: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(sources), dtype=torch.float64, device=ce.device).index_add_(0, index, values)

    gate = out.gate.double() if getattr(out, "gate", None) is not None else torch.zeros_like(ce)
    parts = dict(zip(SOURCE_SUMS, (per_source(ce), per_source((labels != IGNORE_INDEX).sum(-1).double()),
                                   per_source(torch.ones_like(ce)), per_source(gate)), strict=True))
    return {f"{name}/{part}": values[i] for i, name in enumerate(sources) for part, values in parts.items()}


def source_metrics(sums: dict[str, float], sources: list[str], with_gate: bool) -> dict[str, float]:
    """`<source>/loss`, `/perplexity`, `/tokens` (token-weighted) and `/gate_mean` of each source that had
    validation rows."""
    out: dict[str, float] = {}
    for name in sources:
        tokens = sums[f"{name}/tokens"]
        if not tokens:
            continue
        loss = sums[f"{name}/loss_sum"] / tokens
        out.update({f"{name}/loss": loss, f"{name}/perplexity": math.exp(min(loss, 50.0)), f"{name}/tokens": tokens})
        if with_gate:
            out[f"{name}/gate_mean"] = sums[f"{name}/gate_sum"] / max(sums[f"{name}/rows"], 1.0)
    return out


class LanguageModelTask(AveragedWeights):
    eval_sum_keys: tuple[str, ...] = ("loss_sum", "tokens")
    name = "lm"  # the task a model family's registry entry names
    selection_metric, selection_mode = "loss", "min"
    loss_per_token = True  # the loop normalises a step's loss by its global batch's tokens

    def __init__(self, cfg: Config, data: DataInfo | None = None, val_split: str = "val"):
        """`cfg` as `resolve_config` returns it (the model's vocab_size is the data's); `val_split="test"`
        validates on the synthetic held-out test problems (hrm-ray eval)."""
        self.data = data or describe_data(cfg)
        check_vocab(cfg.model.vocab_size, self.data.vocab_size, cfg.data.dataset)
        if not cfg.model.vocab_size:
            raise ValueError("LanguageModelTask needs a resolved config (hrm_ray.train.resolve.resolve_config): "
                             "model.vocab_size is 0")
        self.val_split = val_split
        self.cfg = cfg
        self._rows: dict[str, list] = {}
        self._tokenizer = None
        self._eval_suite: list = []
        self.ema: EMA | None = None
        if self.data.sources:  # a mixture: validation per source beside the whole mix
            self.eval_sum_keys = (*LanguageModelTask.eval_sum_keys, *source_sum_keys(self.data.sources))

    def needs_ray_data(self) -> bool:
        """Ray Datasets feed a prepared dataset to a fixed group of Ray Train workers; in-process, and in an
        elastic run (whose data position is a global sample index), only a mixture needs them."""
        return self.data.kind == "mixture" or (self.data.kind == "prepared" and run_plan(self.cfg).fixed_group)

    # before a task is built (class methods: hrm_ray.train.task_registry) -------------------------
    @classmethod
    def resolve(cls, cfg: Config) -> None:
        """`model.vocab_size` from the data (an explicit one must be every dataset's); the dataset paths and
        the `eval:` task files made absolute and checked."""
        from hrm_ray.train.task_evals import absolute_task_specs

        if cfg.data.dataset != SYNTHETIC:
            cfg.data.dataset = absolute_dataset_spec(cfg.data.dataset)
        cfg.eval.tasks = absolute_task_specs(cfg.eval.tasks)  # NAME=PATH made absolute, checked
        check_data(cfg)  # each prepared dataset's meta.json, named in the error
        data = describe_data(cfg)
        check_vocab(cfg.model.vocab_size, data.vocab_size, cfg.data.dataset)
        cfg.model.vocab_size = data.vocab_size

    @staticmethod
    def reads_ray_data(cfg: Config) -> bool:
        """With Ray Train workers: every dataset but the synthetic arithmetic is a Ray Dataset."""
        return cfg.data.dataset != SYNTHETIC

    @staticmethod
    def probe_batch(cfg: Config, size: int) -> Batch:
        """`size` examples of random tokens at the run's longest sequences (hrm_ray.train.memory)."""
        generator = torch.Generator().manual_seed(0)
        length = cfg.data.max_seq_len
        tokens = torch.randint(3, cfg.model.vocab_size, (size, length), generator=generator)
        mask = torch.ones(size, length, dtype=torch.bool)
        return {"encoder_ids": tokens, "encoder_mask": mask, "decoder_input_ids": tokens.clone(),
                "labels": tokens.clone(), "decoder_mask": mask.clone()}

    @staticmethod
    def probe_forward(model: nn.Module, batch: Batch) -> None:
        model(batch, 1.0)

    @staticmethod
    def dry_batch(cfg: Config) -> int:
        from hrm_ray.train.dry_run import dry_batch

        return dry_batch(cfg)

    @staticmethod
    def dry_run(cfg: Config) -> str:
        """One forward/backward on a synthetic arithmetic batch (hrm_ray.train.dry_run), as text."""
        from hrm_ray.train.dry_run import dry_run, format_dry_run

        return format_dry_run(dry_run(cfg))

    # driver side -------------------------------------------------------------------------------
    def ray_datasets(self) -> dict[str, Any]:
        if not self.needs_ray_data():
            return {}
        from hrm_ray.data.ingest import load_prepared_split, parse_dataset_spec

        specs = parse_dataset_spec(self.cfg.data.dataset)
        if len(specs) == 1:
            train, val = load_prepared_split(specs[0][0], "train"), load_prepared_split(specs[0][0], "val")
        else:  # a mixture's training rows come from the files (train_feed); only validation streams
            train, val = None, self._mixed_val(specs)
        if self.cfg.data.max_val_samples and train is not None:
            val = val.limit(self.cfg.data.max_val_samples)
        return {"val": val} if train is None else {"train": train, "val": val}

    def _mixed_val(self, specs: list[tuple[str, float]]) -> Any:
        """A mixture's validation rows, at most `max_val_samples`: each source its weighted share of them (a limit
        of the mixed stream, which holds the sources one after another, would keep the first source only)."""
        from hrm_ray.data.ingest import mix_datasets

        seed, cap = self.cfg.train.seed, self.cfg.data.max_val_samples
        val, info = mix_datasets(specs, "val", seed=seed)
        if cap and cap < info["total"]:
            val, _ = mix_datasets(specs, "val", seed=seed, num_samples=cap)
        return val

    # model ---------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_model(self.cfg.model)

    def build_optimizers(self, model: nn.Module) -> list[torch.optim.Optimizer]:
        """The optimizer, and (train.ema) the EMA of the weights that validation and best-model/ use."""
        t = self.cfg.train
        self.ema = EMA(model, t.ema_decay, warmup=t.ema_warmup) if t.ema else None
        return [build_optimizer(model.parameters(), self.cfg.optim)]


    def gate_scale(self, step: int) -> float:
        return gate_scale(step, self.cfg.train.hrm_gate_warmup_steps, self.cfg.train.gate_ramp_steps)

    def frozen_parameters(self, model: nn.Module, step: int) -> list[nn.Parameter]:
        return list(unwrap(model).hrm_parameters()) if self.gate_scale(step) == 0.0 else []

    def step_log(self, step: int) -> dict[str, float]:
        out = {"gate_scale": self.gate_scale(step)}
        if self.cfg.model.hrm.enabled and self.cfg.model.hrm.use_halting:
            out["halt_target"] = self.cfg.model.hrm.halt_target
        return out

    # data ----------------------------------------------------------------------------------------
    def train_samples(self) -> int:
        return self.data.train_samples

    def synthetic_pairs(self, split: str) -> list[tuple[str, str]]:
        """Training problems, or the validation set: distinct problems of `val_split`, at most
        `synthetic_val_size` (and `max_val_samples`)."""
        d = self.cfg.data
        if split == "train":
            return arithmetic_pairs("train", d.synthetic_train_size, d.synthetic_max_operand, SYNTHETIC_SPLIT_SEED)
        size = min(d.synthetic_val_size, d.max_val_samples or d.synthetic_val_size)
        pairs = arithmetic_pairs(self.val_split, size, d.synthetic_max_operand, SYNTHETIC_SPLIT_SEED)
        return list(dict.fromkeys(pairs))

    def synthetic_rows(self, split: str) -> list[dict[str, list[int]]]:
        if split not in self._rows:
            self._rows[split] = make_triplets(self.synthetic_pairs(split), char_tokenizer(), self.cfg.data.max_seq_len,
                                              self.data.bos_id, self.data.eos_id)
        return self._rows[split]

    def _collate(self, split: str):
        rows = self.synthetic_rows(split)
        pad_id = self.data.pad_id
        return lambda indices: pad_batch([rows[i] for i in indices], pad_id)

    def _paths(self) -> list[str]:
        from hrm_ray.data.ingest import parse_dataset_spec

        return [path for path, _ in parse_dataset_spec(self.cfg.data.dataset)]

    def _triplet_collate(self):
        from hrm_ray.train.token_check import CheckedTripletCollate

        return CheckedTripletCollate(self.data.pad_id, self.cfg.data.max_seq_len, self.cfg.model.vocab_size,
                                     self._paths())

    def train_feed(self, ctx: WorkerContext) -> BatchFeed:
        """Synthetic rows by index; a mixture from its sources' files, interleaved by weight
        (hrm_ray.train.mixture_feed); a prepared dataset from this rank's Ray Dataset shard, or (in-process, or
        an elastic run) straight from its files; all but the Ray shard addressed by a global sample index."""
        t = self.cfg.train
        accum = micro_batches(self.cfg, ctx.world_size)
        if self.data.kind == SYNTHETIC:
            return IndexedFeed(len(self.synthetic_rows("train")), self._collate("train"), t.batch_size, t.seed,
                               ctx.rank, ctx.world_size, accum)
        if self.data.kind == "mixture":
            return mixture_feed(self._paths(), [e["proportion"] for e in self.data.meta["mixture"]],
                                self.data.train_samples, self._triplet_collate(), t.batch_size, accum, ctx.rank,
                                ctx.world_size, t.seed, SHUFFLE_BUFFER)
        if "train" in ctx.shards:
            return EpochFeed(ray_shard_epochs(ctx.shards["train"], t.batch_size, self._triplet_collate(), t.seed,
                                              SHUFFLE_BUFFER, prefetch_batches=self.cfg.data.dataset_workers))
        epochs = parquet_epochs(self._paths()[0], "train", t.batch_size * accum * ctx.world_size, t.seed,
                                SHUFFLE_BUFFER)
        return GlobalBatchFeed(epochs, table_rows(self._triplet_collate()), t.batch_size, accum, ctx.rank,
                               ctx.world_size)

    def val_batches(self, ctx: WorkerContext) -> Iterable[Batch]:
        size = self.cfg.train.eval_batch_size
        if self.data.kind == SYNTHETIC:
            rows = self.synthetic_rows("val")
            return indexed_batches(len(rows), self._collate("val"), size, ctx.rank, ctx.world_size)
        if "val" in ctx.shards:
            return ctx.shards["val"].iter_torch_batches(batch_size=size, collate_fn=self._triplet_collate())
        return parquet_batches(self._paths()[0], "val", size, self._triplet_collate(), self.cfg.data.max_val_samples)

    # losses --------------------------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: Batch, step: int) -> StepOutput:
        source_id = batch.pop("source_id", None)
        share = batch.pop("source_share", None)  # the global batch's (a mixture feed's), else this batch's
        out = model(batch, self.gate_scale(step))
        metrics = {**out.losses, **out.diagnostics}
        if source_id is not None and self.data.sources:
            counts = source_counts(source_id, len(self.data.sources))
            share = counts / source_id.numel() if share is None else share
            metrics.update({f"mix_{name}": share[i] for i, name in enumerate(self.data.sources)})
            if getattr(out, "gate", None) is not None:  # gate_src_<name>: the HRM gate on that source's rows
                gates = source_gates(source_id, out.gate, counts)
                metrics.update({f"{SOURCE_GATE}{name}": gates[i] for i, name in enumerate(self.data.sources)})
        return StepOutput(out.loss, metrics, out.num_tokens)

    def eval_sums(self, model: nn.Module, batch: Batch, step: int) -> dict[str, torch.Tensor]:
        source_id = batch.pop("source_id", None)
        out = model(batch, self.gate_scale(step))
        tokens = out.num_tokens.double()
        sums = {"loss_sum": out.losses["ce"].double() * tokens, "tokens": tokens}
        if self.data.sources:
            sums.update(source_eval_sums(out, batch["labels"], source_id, self.data.sources))
        return sums

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """The whole validation set's token-weighted loss and perplexity; of a mixture, each source's too."""
        loss = sums["loss_sum"] / max(sums["tokens"], 1.0)
        whole = {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": sums["tokens"]}
        if not self.data.sources:
            return whole
        return {**whole, **source_metrics(sums, self.data.sources, self.cfg.model.hrm.enabled)}

    def task_metrics(self, model: nn.Module, step: int) -> dict[str, float]:
        """The `eval:` section's task evaluations of `model` (hrm_ray.evals.suite) at the gate scale of `step`:
        {task/metric: value}."""
        from tokenizers import Tokenizer

        from hrm_ray.evals.scoring import Thinking
        from hrm_ray.evals.suite import load_suite, suite_metrics

        e = self.cfg.eval
        if self._tokenizer is None:  # the tokenizer and the task files are read once per run
            self._tokenizer = Tokenizer.from_str(self.data.tokenizer_json)
            self._eval_suite = load_suite(e.tasks, limit=e.limit)
        how = Thinking(gate_scale=self.gate_scale(step), max_seq_len=self.cfg.data.max_seq_len,
                       batch_size=e.prompts_per_batch)
        return suite_metrics(model, self._tokenizer, self._eval_suite, how, e.max_new_tokens)

    def artifacts(self) -> dict[str, bytes]:
        meta = {**self.data.meta, "vocab_size": self.data.vocab_size, "pad_id": self.data.pad_id,
                "bos_id": self.data.bos_id, "eos_id": self.data.eos_id, "dataset": self.cfg.data.dataset}
        return {"tokenizer.json": self.data.tokenizer_json.encode(), "meta.json": json.dumps(meta).encode()}
