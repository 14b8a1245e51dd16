"""The config a run trains with, resolved once on the driver before anything starts.

`resolve_config(cfg)` returns a new Config (the given one is left as it was) with

  - the storage root pinned in `ray.storage_path` (`hrm_ray.storage.resolve_root`);
  - `--init_from` and the dataset paths absolute (Ray workers and Tune trials run in other directories),
    checked to exist: each problem a UserError naming the path, before Ray starts or anything is written;
  - what the data decides: the LM's `model.vocab_size` (its tokenizer / meta.json); the puzzle model's
    vocab_size, seq_len and num_puzzle_identifiers (dataset.json), the family's defaults of `train` fields
    left unset (the TRM's EMA), the per-worker `train.batch_size`
    (`global_batch_size` / workers) and, with `train.steps` 0, the steps and `val_every` of `epochs` and
    `eval_interval`.

It is what the run's config.yaml records and what tasks are built with; tasks never write to it.
Resolving a resolved config changes nothing (a sweep resolves its base config, each trial again).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable

from hrm_ray.config import SYNTHETIC, Config, dataset_given, explicit_fields
from hrm_ray.errors import UserError
from hrm_ray.storage import is_remote, join, resolve_input, resolve_root
from hrm_ray.train.checkpoint import locate_weights
from hrm_ray.train.global_batch import check_worker_range


def resolve_config(cfg: Config) -> Config:
    """A copy of `cfg` with paths absolute and the data-derived fields filled in (see the module doc)."""
    cfg = copy.deepcopy(cfg)
    cfg.ray.storage_path, note = resolve_root(cfg.ray.storage_path)
    if note:
        print(note)
    if cfg.train.init_from:
        cfg.train.init_from = resolve_init_from(cfg.train.init_from, cfg.ray.storage_path)
        locate_weights(cfg.train.init_from)
    if cfg.task == "puzzle":
        resolve_puzzle(cfg)
    else:
        resolve_lm(cfg)
    check_worker_range(cfg)
    return cfg


def resolve_init_from(path: str, storage_root: str) -> str:
    """`--init_from`: a bare run name (no `/`) is that run under the storage root, as the experiment scripts
    read it, unless a path of that name exists here (it wins); the note says which was taken."""
    bare = "/" not in path and os.sep not in path and not is_remote(path)
    if bare and not os.path.exists(path):
        stored = join(storage_root, path)
        print(f"--init_from {path}: the run '{path}' under the storage root ({stored})")
        return stored
    resolved = resolve_input(path, "--init_from")
    if bare:
        print(f"--init_from {path}: {resolved} in the current directory (it exists here; the storage root's run "
              f"of that name is not read)")
    return resolved


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


def resolve_lm(cfg: Config) -> None:
    """The LM: `model.vocab_size` from the data (an explicit one must be every dataset's)."""
    from hrm_ray.train.lm_task import check_data, check_vocab, describe_data
    from hrm_ray.train.task_evals import absolute_task_specs

    if cfg.data.dataset != SYNTHETIC:
        cfg.data.dataset = absolute_dataset_spec(cfg.data.dataset)
    cfg.eval.tasks = absolute_task_specs(cfg.eval.tasks)  # NAME=PATH made absolute, checked
    check_data(cfg)  # each prepared dataset's meta.json, named in the error
    data = describe_data(cfg)
    check_vocab(cfg.model.vocab_size, data.vocab_size, cfg.data.dataset)
    cfg.model.vocab_size = data.vocab_size


def apply_train_defaults(cfg: Config) -> None:
    """The model family's own defaults of `train` fields (the TRM's EMA), where the config left them unset."""
    unset = set(vars(cfg.train)) - explicit_fields(cfg.train)
    for key, value in getattr(cfg.model, "TRAIN_DEFAULTS", {}).items():
        if key in unset:
            setattr(cfg.train, key, value)


def resolve_puzzle(cfg: Config) -> None:
    """The puzzle families: the model's data fields, the per-worker batch and the schedule in steps."""
    from hrm_ray.data.puzzles.sampler import local_batch_size
    from hrm_ray.train.puzzle_task import load_dataset_split, puzzle_schedule, resolve_model

    if dataset_given(cfg.data.dataset):
        cfg.data.dataset = resolve_input(cfg.data.dataset, "--dataset")
    meta = load_dataset_split(cfg.data.dataset, "train").metadata
    load_dataset_split(cfg.data.dataset, cfg.data.test_split)
    cfg.model = resolve_model(cfg.model, meta)
    apply_train_defaults(cfg)
    try:
        cfg.train.batch_size = local_batch_size(cfg.train.global_batch_size, max(1, cfg.ray.num_workers))
    except ValueError as exc:
        raise UserError(f"global_batch_size: {exc}") from None
    schedule = puzzle_schedule(cfg, meta)
    if cfg.train.steps == 0:
        cfg.train.steps, cfg.train.val_every = schedule.total_steps, schedule.steps_per_iteration
