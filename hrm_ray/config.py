"""One typed config tree for every job: dataclass defaults, YAML instances, seed-style CLI flags.

A YAML file may name a `base:` YAML (relative to itself) that it overrides. On the command line (each
token read once, by `read_flags`), `--field value` sets the leaf called `field` where that name is unique
and not context-free (the seed trainer's flag names: `--batch_size`, `--learning_rate`, `--ds_weight`,
...), and `section.field=value` or `--section.field value` sets any field by its dotted path. Unknown keys
are errors that name the key and suggest the closest one.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hrm_ray.errors import UserError
from hrm_ray.models import registry

SYNTHETIC = "synthetic"  # data.dataset: the generated arithmetic problems, no data on disk


def dataset_given(dataset: str) -> bool:
    """Whether `data.dataset` names data on disk or in storage (not the synthetic default, not empty)."""
    return dataset not in ("", SYNTHETIC)


@dataclass
class DataConfig:
    # The LM: "synthetic" or a prepared dataset directory; the puzzle families: a puzzle dataset directory
    # (the paper's `data_path`).
    dataset: str = SYNTHETIC
    max_seq_len: int = 256
    dataset_workers: int = 1
    max_val_samples: int = 0
    synthetic_train_size: int = 20000
    synthetic_val_size: int = 500
    synthetic_max_operand: int = 99
    test_split: str = "test"            # puzzles: the split evaluations read


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    lr_scheduler: str = "cosine"
    lr_min_ratio: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    puzzle_emb_lr: float = 1e-2         # puzzles: sign-SGD on the sparse puzzle embedding
    puzzle_emb_weight_decay: float = 0.1


@dataclass
class TrainConfig:
    steps: int = 0
    epochs: int = 1                     # puzzles: group-based epochs (one puzzle of each group per epoch)
    batch_size: int = 32                # the LM: per worker
    global_batch_size: int = 768        # puzzles: shared by all workers
    eval_batch_size: int = 64
    grad_accum_steps: int = 1
    val_every: int = 200                # the LM: steps between evaluations; 0: none but the final one
    eval_interval: int = 0              # puzzles: epochs between evaluations; 0 = only at the end
    eval_subset: int = 1000             # puzzles: test examples in intermediate evaluations (0 = all)
    log_steps: int = 10
    mixed_precision: str = "none"
    seed: int = 0
    run_name: str = ""
    checkpoint_limit: int = 3
    save_best_model: bool = True
    eval_loss_patience: int = 0  # stop after this many evaluations without a better selection metric (0: never)
    # The metric that picks best-model/ and drives patience: "" the task's own (LM: val loss), else any logged
    # validation or task-evaluation metric, e.g. math/loss or gsm8k/exact_match (hrm_ray.train.task.selection_mode:
    # names ending in loss/perplexity/ppl/error are lower-is-better, the rest higher-is-better).
    select_on: str = ""
    patience_grace_steps: int = 0
    hrm_gate_warmup_steps: int = 0
    gate_ramp_steps: int = 0
    init_from: str = ""
    # Initial-value fields of the model (comma-separated dotted paths, e.g. model.bridge.gate_init_bias) set
    # again after --init_from loads its weights; a sweep adds the ones it searches over.
    init_values: str = ""
    max_nonfinite_steps: int = 10
    ema: bool = False                   # evaluate (and keep best-model/ of) an EMA of the weights
    ema_decay: float = 0.999
    # Ramp the decay, min(ema_decay, (1 + t) / (10 + t)) at update t, so the average follows the weights from
    # the start; false: the papers' constant decay from the initial weights (their recipes set it).
    ema_warmup: bool = True
    ema_puzzle_emb: bool = False        # puzzles: average the sparse puzzle-embedding table too
    wandb: str = "auto"
    wandb_project: str = "hrm-ray"      # the gated fork's `project_name=`
    wandb_run_id: str = ""              # "": a new id for a new run; a resumed run keeps the id it recorded
    compile: bool = False  # torch.compile the model's hot units (hrm_ray/train/compile.py)


@dataclass
class EvalConfig:
    """Task evaluations during training (hrm_ray.evals): on rank 0 at every `every`-th validation and the last
    one, with the gate scale the model trains at; logged as eval/<task>/<metric>."""
    tasks: list[str] = field(default_factory=list)  # NAME or NAME=PATH (a local JSONL/Parquet dev file)
    every: int = 1                      # run the tasks at every K-th validation
    limit: int = 200                    # examples of each task (0: all)
    max_new_tokens: int = 64
    prompts_per_batch: int = 32


@dataclass
class RayConfig:
    address: str = ""
    num_workers: int = 1                # `MIN-MAX` (e.g. 1-2) sets min_workers too: an elastic run
    min_workers: int = 0                # elastic: the fewest workers a run goes on with (0: fixed num_workers)
    group_start_timeout_s: float = 30.0  # elastic: a worker group not started by then is retried with what fits
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = ""
    max_failures: int = 0
    placement_strategy: str = "PACK"  # PACK: workers on as few nodes as fit | SPREAD: across nodes


@dataclass
class TuneConfig:
    """A sweep: the search space (`space`: dotted config path -> a Tune distribution such as
    `{uniform: [-4.0, -1.0]}`, written in YAML as dotted keys of the `tune:` section) and the scheduler."""
    space: dict = field(default_factory=dict)
    num_samples: int = 8
    max_t: int = 0                      # ASHA's budget in steps; 0: train.steps
    grace_period: int = 0               # steps before ASHA's first cut; 0: max_t / reduction_factor^2
    reduction_factor: int = 3
    max_concurrent_trials: int = 0      # 0: as many as the cluster's resources allow
    scheduler: str = "asha"             # asha | fifo (every trial runs to max_t)
    search_seed: int = 0


DEFAULT_MODEL = "hrm_lm"
CODE_VERSION_KEY = "code_version"  # a run's config.yaml records the code it ran under this key
EXPLICIT_ATTR = "_explicit_fields"


@dataclass
class Config:
    model: Any = field(default_factory=lambda: model_section(DEFAULT_MODEL))
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def task(self) -> str:
        """The task that trains the chosen model family: "lm" or "puzzle"."""
        return registry.resolve(self.model.name)[0].task


def model_section(name: str) -> Any:
    """The config of model `name` (a family or a named preset of one), preset values filled in."""
    try:
        return registry.default_config(name)
    except ValueError as exc:
        raise UserError(f"model.name: {exc}") from None


# The HRM paper's flag names (its pretrain.py / Hydra config) -> fields, for the puzzle experiments.
PAPER_FLAGS: dict[str, str] = {
    "data_path": "data.dataset",
    "lr": "optim.learning_rate",
    "lr_warmup_steps": "optim.warmup_steps",
    "arch": "model.name",
    "project_name": "train.wandb_project",
}
# Forms of the gated HRM fork accepted and mapped onto ours: name -> the note printed when one is used.
MAPPED_FLAGS: dict[str, str] = {
    "checkpoint_path": "checkpoint_path=DIR is the run's directory, where the fork saves and resumes from: "
                       "ray.storage_path=PARENT train.run_name=NAME (a run already there is resumed)",
    "checkpoint_every_eval": "checkpoint_every_eval: hrm-ray writes a checkpoint at every evaluation always "
                             "(train.checkpoint_limit keeps the newest)",
}
# The seed trainer's names of fields that moved: one field each.
SEED_FLAGS: dict[str, str] = {"save_dir": "ray.storage_path"}
# Leaf names that say nothing without their section (`--mode` of what?): no short flag, only the dotted path
# (`--model.bridge.mode`), even where the name is unique in the tree.
CONTEXT_FREE_NAMES = frozenset({"name", "enabled", "mode", "every", "limit", "expand", "chunk_size"})
# Sections of configs saved before the model families shared one `model` section (old runs' config.yaml).
LEGACY_SECTIONS: dict[str, dict[str, str]] = {
    "puzzle": {"data_path": "data.dataset", "global_batch_size": "train.global_batch_size",
               "eval_interval": "train.eval_interval", "eval_subset": "train.eval_subset",
               "test_split": "data.test_split", "puzzle_emb_lr": "optim.puzzle_emb_lr",
               "puzzle_emb_weight_decay": "optim.puzzle_emb_weight_decay", "ema": "train.ema",
               "ema_decay": "train.ema_decay"},
}

BOOL_WORDS = ("1", "true", "yes", "on", "0", "false", "no", "off")

CHOICES: dict[str, tuple[str, ...]] = {
    "model.loss_type": ("stablemax_cross_entropy", "softmax_cross_entropy"),
    "model.pos_encodings": ("rope", "learned", "none"),
    "model.token_mixer": ("attention", "mlp"),
    "model.encoder_backend": ("transformer", "mamba2"),
    "model.bridge.mode": ("residual", "prefix"),
    "optim.optimizer": ("adamw", "adamw_8bit", "adam_atan2"),
    "optim.lr_scheduler": ("cosine", "linear", "constant"),
    "train.mixed_precision": ("none", "bf16", "fp16"),
    "train.wandb": ("auto", "online", "offline", "off"),
    "tune.scheduler": ("asha", "fifo"),
    "ray.placement_strategy": ("PACK", "SPREAD"),
}

# Range checks of the fields a tree has (model fields only apply to the families that have them).
NON_NEGATIVE = (
    "train.steps", "train.epochs", "train.val_every", "train.eval_loss_patience",
    "train.patience_grace_steps", "train.hrm_gate_warmup_steps", "train.gate_ramp_steps",
    "train.checkpoint_limit", "train.max_nonfinite_steps", "optim.warmup_steps", "optim.weight_decay",
    "optim.grad_clip", "model.dropout", "model.hrm.ds_weight", "model.hrm.halting_weight",
    "data.max_val_samples", "ray.num_workers", "ray.max_failures", "model.vocab_size",
    "train.eval_interval", "train.eval_subset", "data.dataset_workers", "optim.puzzle_emb_lr", "optim.puzzle_emb_weight_decay",
    "model.puzzle_emb_ndim", "model.bridge.gate_reg_weight", "model.gate_reg_weight", "tune.max_t", "tune.grace_period", "tune.max_concurrent_trials", "eval.limit",
)
POSITIVE = (
    "train.batch_size", "train.eval_batch_size", "train.grad_accum_steps", "train.log_steps", "ray.group_start_timeout_s",
    "optim.learning_rate", "model.d_model", "model.n_heads", "model.hrm.h_cycles", "model.hrm.l_cycles",
    "model.hrm.h_layers", "model.hrm.l_layers", "data.max_seq_len",
    "model.mamba.chunk_size", "model.bridge.prefix_tokens", "model.bridge.gate_hidden_ratio",
    "ray.cpus_per_worker", "train.global_batch_size", "model.h_cycles", "model.l_cycles", "model.h_layers",
    "model.l_layers", "model.halt_max_steps", "model.gate_hidden_ratio", "tune.num_samples", "eval.every",
    "eval.max_new_tokens", "eval.prompts_per_batch",
)


def _is_section(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def leaf_paths(node: Any, prefix: str = "") -> dict[str, type]:
    """Every leaf field of the tree as `dotted.path -> type` (mapping fields such as tune.space are not
    leaves: they are set from YAML only)."""
    hints = _field_types(type(node))
    paths: dict[str, type] = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        path = f"{prefix}{f.name}"
        if _is_section(value):
            paths.update(leaf_paths(value, path + "."))
        elif hints[f.name] is not dict:
            paths[path] = hints[f.name]
    return paths


@functools.cache
def _field_types(section: type) -> dict[str, Any]:
    """A section class's field types (its annotations evaluated once: typing.get_type_hints is slow)."""
    return typing.get_type_hints(section)


def flag_index(cfg: Config) -> dict[str, str]:
    """Short flag name -> dotted path: every leaf whose name is unique in the tree and says what it sets
    without its section (not one of CONTEXT_FREE_NAMES)."""
    by_name: dict[str, list[str]] = {}
    for path in leaf_paths(cfg):
        by_name.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    return {name: paths[0] for name, paths in by_name.items() if len(paths) == 1 and name not in CONTEXT_FREE_NAMES}


def aliases_of(cfg: Config) -> dict[str, str]:
    """Other names of fields -> dotted paths: the paper's flags and the chosen family's own (the seed's and
    the paper's spellings of its fields, e.g. H_cycles -> model.h_cycles)."""
    family = {name: f"model.{path}" for name, path in getattr(cfg.model, "ALIASES", {}).items()}
    hydra = {f"arch.{name}": path for name, path in family.items()}  # the paper's `arch.H_cycles=3`
    hydra.update({f"arch.{path[len('model.'):]}": path for path in leaf_paths(cfg) if path.startswith("model.")})
    return {**family, **hydra, **SEED_FLAGS, **PAPER_FLAGS}


def suggest(name: str, candidates: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def convert(value: Any, kind: type, where: str) -> Any:
    """Coerce a YAML or CLI value to the field's type; `where` names it in errors."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in BOOL_WORDS:
            return BOOL_WORDS.index(text) < 4
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected an integer, got {value!r}") from None
        if not number.is_integer():
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return int(number)
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected a number, got {value!r}") from None
    if typing.get_origin(kind) is list:  # a YAML list, or a comma-separated string (a flag)
        items = value if isinstance(value, (list, tuple)) else str(value or "").strip("[]").split(",")
        item_kind = (typing.get_args(kind) or (str,))[0]
        return [convert(str(item).strip() if item_kind is str else item, item_kind, where)
                for item in items if str(item).strip()]
    return "" if value is None else str(value)


def get_value(cfg: Config, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def has_path(cfg: Config, path: str) -> bool:
    try:
        get_value(cfg, path)
    except AttributeError:
        return False
    return True


def set_value(cfg: Config, path: str, raw: Any, where: str = "") -> None:
    """Set one leaf. Setting `model.name` to another model swaps the model section for that model's
    defaults and keeps the explicit values its fields share with the old one."""
    paths = leaf_paths(cfg)
    if path not in paths:
        raise UserError(f"{where or 'config'}: unknown key '{path}'{suggest(path, paths)}")
    if path == "model.name":
        switch_model(cfg, convert(raw, str, where or path), where or path)
        return
    if path == "ray.num_workers" and isinstance(raw, str) and "-" in raw.strip()[1:]:
        cfg.ray.min_workers, raw = worker_range(raw, where or path)
        mark_explicit(cfg.ray, ["min_workers"])
    *parents, leaf = path.split(".")
    node: Any = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, convert(raw, paths[path], where or path))
    mark_explicit(node, [leaf])


def worker_range(raw: str, where: str) -> tuple[int, int]:
    """`MIN-MAX` workers (an elastic run): (MIN, MAX), 1 <= MIN <= MAX."""
    low, _, high = raw.strip().partition("-")
    low_n, high_n = convert(low, int, where), convert(high, int, where)
    if not 1 <= low_n <= high_n:
        raise UserError(f"{where}: expected MIN-MAX workers with 1 <= MIN <= MAX, got {raw!r}")
    return low_n, high_n


def switch_model(cfg: Config, name: str, where: str = "model.name") -> None:
    """Swap the model section for model `name`'s: explicit values and sweep knobs of the fields both models
    have carry over, the rest go with the old model."""
    old = cfg.model
    if name == old.name:
        mark_explicit(old, ["name"])
        return
    if name not in registry.names() and (file := arch_file(name, Path.cwd())) is not None:
        apply_arch_file(cfg, file, where)
        return
    try:
        new = registry.default_config(name)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    kept = explicit_values(old)
    cfg.model = new
    new_paths = leaf_paths(new)
    for path, value in kept.items():
        if path in new_paths and path != "name":
            set_value(cfg, f"model.{path}", value, where)
    mark_explicit(new, ["name"])
    # Sweep knobs of fields only the old model had go with it, as its other field values do.
    cfg.tune.space = {k: v for k, v in cfg.tune.space.items()
                      if not k.startswith("model.") or k[len("model."):] in new_paths}


def explicit_values(section: Any, prefix: str = "") -> dict[str, Any]:
    """dotted path -> value of every field set explicitly in `section` and its sub-sections."""
    out: dict[str, Any] = {}
    marked = explicit_fields(section)
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if _is_section(value):
            out.update(explicit_values(value, f"{prefix}{f.name}."))
        elif f.name in marked:
            out[prefix + f.name] = value
    return out


def mark_explicit(section: Any, names: typing.Iterable[str] | None = None) -> Any:
    """Record `names` (default: every field) of a config section as set explicitly."""
    names = [f.name for f in dataclasses.fields(section)] if names is None else names
    section.__dict__.setdefault(EXPLICIT_ATTR, set()).update(names)
    return section


def explicit_fields(section: Any) -> set[str]:
    """Fields of a config section set explicitly (YAML or command line), as opposed to left at their default;
    kept on the section object (not a field: not in to_dict, lost by dataclasses.replace)."""
    return set(section.__dict__.get(EXPLICIT_ATTR, ()))


def apply_mapping(cfg: Config, mapping: dict, where: str, prefix: str = "") -> None:
    """Apply a nested dict (from YAML) onto the tree; unknown keys are errors naming `where`. In the model
    section `name` goes first (it picks the section's fields) and the family's aliases are accepted; the
    dotted keys of the `tune` section are its search space. At the top level a key that is no section is
    read as a flag (a Hydra config's `data_path: ...`, `lr: ...`, `arch: {...}`)."""
    if prefix == "model.":
        mapping = _model_mapping(cfg, mapping, where)
    if prefix == "tune.":
        mapping = _tune_mapping(cfg, mapping, where)
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if not prefix and not has_path(cfg, path) and _apply_top_level_flag(cfg, str(key), value, where):
            continue
        if not has_path(cfg, path):
            known = list(leaf_paths(cfg)) + _section_paths(cfg)
            raise UserError(f"{where}: unknown key '{path}'{suggest(path, known)}")
        current = get_value(cfg, path)
        if _is_section(current):
            if not isinstance(value, dict):
                raise UserError(f"{where}: '{path}' is a section and needs a mapping, got {value!r}")
            apply_mapping(cfg, value, where, path + ".")
        elif path == "tune.space":
            cfg.tune.space.update(_space(cfg, value, where))
        else:
            set_value(cfg, path, value, f"{where}: {path}")


def _apply_top_level_flag(cfg: Config, key: str, value: Any, where: str) -> bool:
    """A top-level YAML key in the flag form (Hydra's configs); False when it is no flag either."""
    if key == "hydra":  # Hydra's own settings (output directories): nothing of the run
        return True
    if key == "arch" and isinstance(value, dict):
        apply_mapping(cfg, {"model": value}, where)
        return True
    if key in MAPPED_FLAGS:
        apply_mapped_flag(cfg, key, value, where)
        return True
    flags = aliases_of(cfg)
    if key not in flags and key not in flag_index(cfg):
        return False
    target = _flag_target(cfg, key, flags)
    if target == "model.name":
        select_model(cfg, convert(value, str, f"{where}: {key}"), Path(where).parent, f"{where}: {key}")
    else:
        set_value(cfg, target, value, f"{where}: {key} ({target})")
    return True


def apply_mapped_flag(cfg: Config, name: str, value: Any, where: str) -> None:
    """A MAPPED_FLAGS form applied onto the tree, its note on stderr."""
    print(f"note: {MAPPED_FLAGS[name]}", file=sys.stderr)
    if name == "checkpoint_path":
        text = convert(value, str, where).rstrip("/")
        parent, _, run = text.rpartition("/")
        if not run:
            raise UserError(f"{where}: checkpoint_path needs a directory, got {value!r}")
        set_value(cfg, "ray.storage_path", parent or ".", f"{where} (ray.storage_path)")
        set_value(cfg, "train.run_name", run, f"{where} (train.run_name)")
    else:
        convert(value, bool, where)


def arch_file(name: str, base_dir: Path) -> Path | None:
    """The arch YAML `name` stands for (a path, or NAME.yaml beside `base_dir` or in its arch/ or
    config/arch/, Hydra's layout); None when there is none."""
    for candidate in (Path(name), Path(f"{name}.yaml")):
        for folder in (Path(), base_dir, base_dir / "arch", base_dir / "config" / "arch"):
            path = candidate if candidate.is_absolute() else folder / candidate
            if path.is_file():
                return path
    return None


def is_arch_file(path: Path) -> bool:
    """Whether a YAML holds a model (an arch file: a `name:`, a file under arch/, or only model fields by
    any family's names) rather than a config of the tree."""
    mapping = _read_mapping(path)
    if "name" in mapping or path.parent.name == "arch":
        return True
    model_keys = {"defaults", "loss"}
    for family in registry.FAMILIES.values():
        model_keys |= {f.name for f in dataclasses.fields(family.config_class)} | set(family.config_class.ALIASES)
    return bool(mapping) and set(mapping) <= model_keys


def select_model(cfg: Config, name: str, base_dir: Path, where: str) -> None:
    """`model.name` from a family or preset name, or from an arch YAML file (`arch=my_gated_config`)."""
    if name not in registry.names() and (file := arch_file(name, base_dir)) is not None:
        apply_arch_file(cfg, file, where)
    else:
        set_value(cfg, "model.name", name, where)


def apply_arch_file(cfg: Config, path: Path, where: str, composed: bool = False) -> None:
    """An arch YAML (the HRM repositories' `config/arch/*.yaml`: model fields by the paper's names, `name`
    a family, a preset or their module@Class, `loss: {loss_type}`, `${.field}` references, and Hydra's
    `defaults:` naming the preset or arch file it extends, one level deep) as the model."""
    mapping = _read_mapping(path)
    for entry in mapping.pop("defaults", None) or []:
        if composed:
            raise UserError(f"{path}: defaults: an arch file named in 'defaults' cannot have defaults of its own")
        if entry != "_self_":
            name = str(next(iter(entry.values())) if isinstance(entry, dict) else entry)
            file = arch_file(name, path.parent) if name not in registry.names() else None
            if file is not None:
                apply_arch_file(cfg, file, f"{path}: defaults", composed=True)
            else:
                set_value(cfg, "model.name", name, f"{path}: defaults")
    name = str(mapping.pop("name", cfg.model.name))
    if name not in registry.names():
        family = registry.paper_family(name.split("@")[0].rsplit(".", 1)[-1])   # the HRM repositories' module@Class
        if family is None:
            raise UserError(f"{path}: name {name!r} is no model of hrm-ray (known: {', '.join(registry.names())})")
        name = family
    loss = mapping.pop("loss", None)
    if isinstance(loss, dict) and "loss_type" in loss:
        mapping["loss_type"] = loss["loss_type"]
    for key, value in mapping.items():  # `${.hidden_size}`: another field of the same file
        if isinstance(value, str) and value.startswith("${.") and value.endswith("}"):
            mapping[key] = mapping.get(value[3:-1], value)
    print(f"note: {where}: model from {path} ({name})", file=sys.stderr)
    apply_mapping(cfg, {"model": {"name": name, **mapping}}, str(path))


def _model_mapping(cfg: Config, mapping: dict, where: str) -> dict:
    if "name" in mapping:
        switch_model(cfg, convert(mapping["name"], str, f"{where}: model.name"), f"{where}: model.name")
    out: dict = {}
    for key, value in _flatten(mapping).items():
        if key == "name":
            continue
        node = out
        *parents, leaf = _model_alias(cfg.model, key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + str(key)] = value
    return out


def _model_alias(model: Any, key: str) -> str:
    """A model key in today's spelling: `H_cycles` -> `h_cycles`, `hrm.l_steps` -> `hrm.l_cycles`."""
    aliases = getattr(model, "ALIASES", {})
    if key in aliases:
        return aliases[key]
    parent, _, leaf = key.rpartition(".")
    target = aliases.get(leaf)
    if target is not None and target.rpartition(".")[0] == parent:
        return target
    return key


def _tune_mapping(cfg: Config, mapping: dict, where: str) -> dict:
    knobs = {k: v for k, v in mapping.items() if "." in k}
    if knobs:
        cfg.tune.space.update(_space(cfg, knobs, where))
    return {k: v for k, v in mapping.items() if "." not in k}


def _space(cfg: Config, knobs: Any, where: str) -> dict:
    """Check the search space's knobs: each a leaf of the tree with a one-key mapping {distribution: args}."""
    if not isinstance(knobs, dict):
        raise UserError(f"{where}: tune.space must map dotted config paths to distributions, got {knobs!r}")
    paths = leaf_paths(cfg)
    for path, spec in knobs.items():
        if path not in paths:
            raise UserError(f"{where}: tune: '{path}' is not a config field{suggest(path, paths)}")
        if not (isinstance(spec, dict) and len(spec) == 1):
            raise UserError(f"{where}: tune: {path}: expected one distribution such as {{uniform: [LOW, HIGH]}}, "
                            f"got {spec!r}")
    return dict(knobs)


def _section_paths(node: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if _is_section(value):
            out.append(prefix + f.name)
            out.extend(_section_paths(value, prefix + f.name + "."))
    return out


def _read_mapping(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(mapping, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return mapping


def _apply_yaml(path: Path, cfg: Config, profile: str | None, composed: bool = False) -> set[str]:
    """Apply `path` (its `base:` and Hydra `defaults:` first), then its overlay for `profile`; return the
    profiles seen."""
    mapping = _read_mapping(path)
    mapping.pop(CODE_VERSION_KEY, None)  # a run's config.yaml: the code it ran, metadata, not config
    base = mapping.pop("base", None)
    profiles = mapping.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise UserError(f"{path}: 'profiles' must map profile names to overrides")
    seen = _apply_yaml(path.parent / base, cfg, profile) if base else set()
    seen |= _apply_defaults(path, mapping.pop("defaults", None), cfg, profile, composed)
    apply_mapping(cfg, mapping, str(path))
    if profile in profiles:
        apply_mapping(cfg, profiles[profile] or {}, f"{path} (profile {profile})")
    return seen | set(profiles)


def _apply_defaults(path: Path, defaults: Any, cfg: Config, profile: str | None, composed: bool) -> set[str]:
    """Hydra's `defaults:` list, one level deep: each entry a model name or preset (`hrm_v1_gated`), an arch
    YAML (`arch: my_gated_config`, `- my_gated_config` when that file has a `name:`), or another config YAML
    of this tree; `_self_` is skipped (the file itself is applied after its defaults)."""
    if defaults is None:
        return set()
    if not isinstance(defaults, list):
        raise UserError(f"{path}: 'defaults' must be a list (Hydra's form), got {defaults!r}")
    if composed:
        raise UserError(f"{path}: defaults: a file named in 'defaults' cannot have defaults of its own "
                        "(one level deep)")
    where, seen = f"{path}: defaults", set()
    for entry in defaults:
        if isinstance(entry, dict) and len(entry) == 1 and next(iter(entry)) in ("arch", "model"):
            select_model(cfg, str(next(iter(entry.values()))), path.parent, where)
        elif not isinstance(entry, str):
            raise UserError(f"{where}: expected a name or {{arch: NAME}}, got {entry!r}")
        elif entry == "_self_" or entry in registry.names():
            if entry != "_self_":
                set_value(cfg, "model.name", entry, where)
        elif (file := arch_file(entry, path.parent)) is None:
            known = registry.names()
            raise UserError(f"{where}: '{entry}' is no model, preset or YAML file{suggest(entry, known)}")
        elif is_arch_file(file):
            apply_arch_file(cfg, file, where)
        else:
            seen |= _apply_yaml(file, cfg, profile, composed=True)
    return seen


def _yaml_model_name(path: Path, profile: str | None) -> str | None:
    """The model name the YAML chain (bases, the file, the profile) ends with: it decides which model fields
    exist before any section is applied, so a base may set fields of a model its child names."""
    mapping = _read_mapping(path)
    name = _yaml_model_name(path.parent / mapping["base"], profile) if mapping.get("base") else None
    profiles = mapping.get("profiles") or {}
    for layer in (mapping, profiles.get(profile) if isinstance(profiles, dict) else None):
        model = (layer or {}).get("model")
        if isinstance(model, dict) and model.get("name"):
            name = str(model["name"])
    return name


def load_yaml(path: str | Path, cfg: Config | None = None, profile: str | None = None) -> Config:
    """Load a YAML instance of the tree on top of `cfg` (or the defaults).

    A file may name a `base:` file it extends and carry `profiles:` (e.g. demo/gpu/cluster), each a
    partial tree applied after the file itself when that profile is chosen.
    """
    if cfg is None:
        name = _yaml_model_name(Path(path), profile)
        cfg = Config(model=model_section(name)) if name else Config()
    seen = _apply_yaml(Path(path), cfg, profile)
    if profile and profile not in seen:
        known = ", ".join(sorted(seen)) or "none"
        raise UserError(f"--profile: '{profile}' is not defined in {path} (profiles: {known}){suggest(profile, seen)}")
    return cfg


class UnknownFlag(UserError):
    """A flag no field answers to; `among` suggests again with a command's own options among the names."""

    def __init__(self, flag: str, candidates: typing.Iterable[str]):
        self.flag, self.candidates = flag, list(candidates)
        super().__init__(f"unknown flag '{flag}'{suggest(flag, self.candidates)}")

    def among(self, options: typing.Iterable[str]) -> UnknownFlag:
        return UnknownFlag(self.flag, [*options, *self.candidates])


def _flag_target(cfg: Config, name: str, aliases: dict[str, str], dashes: str = "--") -> str:
    """The dotted path flag `name` sets (`dashes`: how it was written, "" for `name=value`)."""
    paths = leaf_paths(cfg)
    if name in paths:
        return name
    target = aliases.get(name) or flag_index(cfg).get(name)
    if target is not None:
        return target
    matching = [p for p in paths if p.rsplit(".", 1)[-1] == name]
    if len(matching) == 1:
        raise UserError(f"flag '{dashes}{name}' says nothing alone: write {dashes}{matching[0]}")
    if matching:
        raise UserError(f"flag '{dashes}{name}' is ambiguous: use one of {', '.join(dashes + p for p in matching)}")
    others = _other_models_paths(cfg)
    if name in others or any(p.startswith("model.") and p.rsplit(".", 1)[-1] == name for p in others):
        raise UserError(f"flag '{dashes}{name}': model '{cfg.model.name}' has no such field (another model family has it)")
    known = [*flag_index(cfg), *aliases, *MAPPED_FLAGS, *paths]
    raise UnknownFlag(f"{dashes}{name}", [dashes + flag for flag in known])


def _other_models_paths(cfg: Config) -> set[str]:
    return {p for name in registry.FAMILIES for p in leaf_paths(Config(model=registry.default_config(name)))}


def apply_overrides(cfg: Config, args: list[str], aliases: dict[str, str] | None = None) -> Config:
    """Apply `--flag value`, `--flag=value`, `--bool_flag`, `dotted.path=value` onto `cfg`, each token read
    once (read_flags). A model name among them is applied first, since it decides which model fields exist."""
    aliases = aliases or {}
    flags = read_flags(args)
    model_names = {"model.name", *(k for k, v in {**PAPER_FLAGS, **aliases}.items() if v == "model.name")}
    for name, value, dashes in flags:
        if name in model_names and value is not None:
            select_model(cfg, value, Path.cwd(), f"{dashes}{name}")
    known = {**aliases_of(cfg), **aliases}
    for name, value, dashes in flags:
        target = "" if name in MAPPED_FLAGS else _flag_target(cfg, name, known, dashes)  # unknown: said first
        if value is None:
            raise UserError(f"flag '{dashes}{name}' needs a value")
        if name in MAPPED_FLAGS:
            apply_mapped_flag(cfg, name, value, name)
        elif name not in model_names:
            set_value(cfg, target, value, f"{dashes}{name}" if name == target else f"{dashes}{name} ({target})")
    return cfg


def read_flags(args: list[str]) -> list[tuple[str, str | None, str]]:
    """The command-line tokens as (name, value as typed, "--" or "" as written): `--flag value`,
    `--flag=value`, `section.key=value`, and a boolean flag alone (true: it takes the next token only when
    that is one of BOOL_WORDS, so `--use_gpu data_path=x` is two settings). A last flag without its value
    has None."""
    booleans = _boolean_flags() if args else set()
    out: list[tuple[str, str | None, str]] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token.startswith("--"):
            name, eq, text = token[2:].partition("=")
            value: str | None = text
            if not eq:
                if name in booleans and (i >= len(args) or args[i].lower() not in BOOL_WORDS):
                    value = "true"
                elif i < len(args):
                    value, i = args[i], i + 1
                else:
                    value = None
            out.append((name, value, "--"))
        elif "=" in token:
            name, _, value = token.partition("=")
            out.append((name, value, ""))
        else:
            raise UserError(f"unexpected argument '{token}' (use --flag value or section.key=value)")
    return out


def _boolean_flags() -> set[str]:
    """Every name of a boolean field in any family's tree: its dotted path, short flag and aliases."""
    names = {"checkpoint_every_eval"}
    for family in registry.FAMILIES:
        cfg = Config(model=registry.default_config(family))
        paths = leaf_paths(cfg)
        spelled = {**{path: path for path in paths}, **flag_index(cfg), **aliases_of(cfg)}
        names |= {name for name, path in spelled.items() if paths.get(path) is bool}
    return names


def validate(cfg: Config) -> Config:
    """Reject invalid values before any work starts; every message names the field."""
    problems = []
    for path, allowed in CHOICES.items():
        if has_path(cfg, path) and (value := get_value(cfg, path)) not in allowed:
            problems.append(f"{path}: '{value}' is not one of {', '.join(allowed)}{suggest(value, allowed)}")
    problems += [f"{p}: must be >= 0, got {get_value(cfg, p)}" for p in NON_NEGATIVE
                 if has_path(cfg, p) and get_value(cfg, p) < 0]
    problems += [f"{p}: must be > 0, got {get_value(cfg, p)}" for p in POSITIVE
                 if has_path(cfg, p) and get_value(cfg, p) <= 0]
    if cfg.model.d_model % cfg.model.n_heads:
        problems.append(f"model.d_model: {cfg.model.d_model} is not divisible by model.n_heads={cfg.model.n_heads}")
    if not 0.0 <= cfg.optim.lr_min_ratio <= 1.0:
        problems.append(f"optim.lr_min_ratio: must be in [0, 1], got {cfg.optim.lr_min_ratio}")
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        problems.append(f"train.ema_decay: must be in [0, 1), got {cfg.train.ema_decay}")
    if cfg.ray.min_workers and not 1 <= cfg.ray.min_workers <= cfg.ray.num_workers:
        problems.append(f"ray.min_workers: must be between 1 and ray.num_workers={cfg.ray.num_workers}, "
                        f"got {cfg.ray.min_workers}")
    for path in ("model.bridge.gate_reg_band", "model.gate_reg_band"):
        band = get_value(cfg, path) if has_path(cfg, path) else [0.0, 1.0]
        if len(band) != 2 or not 0.0 <= band[0] <= band[1] <= 1.0:
            problems.append(f"{path}: expected LOW,HIGH with 0 <= LOW <= HIGH <= 1, got {band}")
    if cfg.train.steps == 0 and cfg.train.epochs == 0:
        problems.append("train.steps/train.epochs: one of them must be > 0")
    known = [f"model.{name}" for name in registry.family_of(cfg.model).init_values]
    problems += [f"train.init_values: '{path}' is not an initial value of model {cfg.model.name} "
                 f"({', '.join(known) or 'it has none'}){suggest(path, known)}"
                 for path in init_value_paths(cfg) if path not in known]
    if problems:
        raise UserError("; ".join(problems))
    return cfg


def init_value_paths(cfg: Config) -> list[str]:
    """The dotted paths `train.init_values` lists."""
    return [path.strip() for path in cfg.train.init_values.split(",") if path.strip()]


def build_config(config_path: str | None, overrides: list[str],
                 aliases: dict[str, str] | None = None, profile: str | None = None) -> Config:
    if profile and not config_path:
        raise UserError("--profile needs --config (profiles are defined in the config YAML)")
    cfg = load_yaml(config_path, profile=profile) if config_path else Config()
    return validate(apply_overrides(cfg, overrides, aliases))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(mapping: dict) -> Config:
    """A config saved by `to_dict` (also one saved before the families shared the `model` section)."""
    cfg = Config()
    apply_mapping(cfg, upgrade_legacy(mapping), "config")
    return cfg


def upgrade_legacy(mapping: dict) -> dict:
    """A saved config of the old layout (`task`, the puzzle model in `arch`, puzzle settings in `puzzle`,
    the storage root in `train.save_dir`) in today's layout; others unchanged."""
    train = mapping.get("train")
    if isinstance(train, dict) and "save_dir" in train:
        train = dict(train)
        save_dir = train.pop("save_dir")
        ray = dict(mapping.get("ray") or {})
        ray["storage_path"] = ray.get("storage_path") or save_dir
        mapping = {**mapping, "train": train, "ray": ray}
    if "task" not in mapping and "arch" not in mapping and "puzzle" not in mapping:
        return mapping
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in mapping.items()
           if k not in ("task", "arch", "puzzle")}
    if mapping.get("task") == "puzzle":
        out["model"] = dict(mapping.get("arch") or {})
        for key, path in LEGACY_SECTIONS["puzzle"].items():
            if key in (mapping.get("puzzle") or {}):
                section, field_name = path.split(".")
                out.setdefault(section, {})[field_name] = mapping["puzzle"][key]
    return out


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
