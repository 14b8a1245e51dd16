"""The config a run trains with, resolved once on the driver before anything starts.

`resolve_config(cfg)` returns a new Config (the given one is left as it was) with

  - the storage root pinned in `ray.storage_path` (hrm_ray.train.run_plan: the run plan, with the mode, the
    workers and the data path, is read from the resolved config);
  - `--init_from` and the dataset paths absolute (Ray workers and Tune trials run in other directories),
    checked to exist: each problem a UserError naming the path, before Ray starts or anything is written;
  - the family's defaults of `train` fields left unset (the TRM's EMA);
  - what the data decides, by the family's task (its `resolve`, hrm_ray.train.task_registry): the LM's
    `model.vocab_size` (its tokenizer / meta.json); the puzzle model's vocab_size, seq_len and
    num_puzzle_identifiers (dataset.json), the per-worker `train.batch_size` (`global_batch_size` / workers)
    and, with `train.steps` 0, the steps and `val_every` of `epochs` and `eval_interval`;
  - an elastic worker range checked against the task's global batch.

It is what the run's config.yaml records and what tasks are built with; tasks never write to it.
Resolving a resolved config changes nothing (a sweep resolves its base config, each trial again).
"""
from __future__ import annotations

import copy
import os

from hrm_ray.config import Config, explicit_fields
from hrm_ray.errors import UserError
from hrm_ray.models import registry
from hrm_ray.storage import is_remote, join, resolve_input
from hrm_ray.train.checkpoint import locate_weights
from hrm_ray.train.global_batch import check_group_sizes
from hrm_ray.train.run_plan import pin_storage_root, run_plan
from hrm_ray.train.task import task_global_batch
from hrm_ray.train.task_registry import task_class


def resolve_config(cfg: Config) -> Config:
    """A copy of `cfg` with paths absolute and the data-derived fields filled in (see the module doc)."""
    cfg = copy.deepcopy(cfg)
    note = pin_storage_root(cfg)
    if note:
        print(note)
    if cfg.train.init_from:
        cfg.train.init_from = resolve_init_from(cfg.train.init_from, cfg.ray.storage_path)
        locate_weights(cfg.train.init_from)
    task = task_class(cfg)
    if cfg.eval.tasks and not hasattr(task, "task_metrics"):  # the hook of hrm_ray.train.task_evals
        raise UserError(f"eval.tasks: task evaluations run on language models; model {cfg.model.name} has none")
    apply_train_defaults(cfg)
    task.resolve(cfg)
    check_worker_range(cfg)
    return cfg


def check_worker_range(cfg: Config) -> None:
    """A UserError when some worker count of an elastic run cannot share the task's global batch evenly."""
    check_group_sizes(run_plan(cfg), *task_global_batch(task_class(cfg), cfg))


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


def apply_train_defaults(cfg: Config) -> None:
    """The model family's own defaults of `train` fields (the TRM's EMA), where the config left them unset."""
    unset = set(vars(cfg.train)) - explicit_fields(cfg.train)
    for key, value in registry.family_of(cfg.model).train_defaults.items():
        if key in unset:
            setattr(cfg.train, key, value)
