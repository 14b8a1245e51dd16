"""One typed config tree for every job: dataclass defaults, YAML instances, seed-style CLI flags.

A YAML file may name a `base:` YAML (relative to itself) that it overrides. On the command line,
`--name value` sets the leaf field called `name` (the seed trainer's flag names: `--batch_size`,
`--learning_rate`, `--ds_weight`, ...), and `section.field=value` or `--section.field value` sets any
field by its dotted path. Unknown keys are errors that name the key and suggest the closest one.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hrm_ray.errors import UserError


@dataclass
class MambaConfig:
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    headdim: int = 32
    chunk_size: int = 64


@dataclass
class HRMConfig:
    enabled: bool = True
    h_cycles: int = 2
    l_steps: int = 2
    h_layers: int = 1
    l_layers: int = 1
    one_step_grad: bool = True
    deep_supervision: bool = False
    ds_weight: float = 0.1
    use_halting: bool = False
    halting_weight: float = 0.005
    halt_target: float = 1.0
    halt_threshold: float = 0.5


@dataclass
class BridgeConfig:
    mode: str = "residual"
    prefix_tokens: int = 4
    gate_init_bias: float = -2.2
    gate_hidden_ratio: float = 0.25


@dataclass
class ModelConfig:
    vocab_size: int = 0
    d_model: int = 256
    n_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    encoder_backend: str = "transformer"
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    mamba: MambaConfig = field(default_factory=MambaConfig)
    hrm: HRMConfig = field(default_factory=HRMConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    max_seq_len: int = 256
    dataset_workers: int = 1
    max_val_samples: int = 0
    synthetic_train_size: int = 20000
    synthetic_val_size: int = 500
    synthetic_max_operand: int = 99


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


@dataclass
class TrainConfig:
    steps: int = 0
    epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum_steps: int = 1
    val_every: int = 200
    log_steps: int = 10
    mixed_precision: str = "none"
    seed: int = 0
    save_dir: str = "runs"
    run_name: str = ""
    checkpoint_limit: int = 3
    save_best_model: bool = True
    eval_loss_patience: int = 0  # stop after this many evaluations without a better selection metric (0: never)
    patience_grace_steps: int = 0
    hrm_gate_warmup_steps: int = 0
    gate_ramp_steps: int = 0
    init_from: str = ""
    max_nonfinite_steps: int = 10
    wandb: str = "auto"
    compile: bool = False  # torch.compile the model's hot units (hrm_ray/train/compile.py)


@dataclass
class RayConfig:
    address: str = ""
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    storage_path: str = ""
    max_failures: int = 0


# The puzzle model's config lives with the model; imported here, after ModelConfig, because
# hrm_ray.models imports ModelConfig from this module.
from hrm_ray.models.puzzle.config import HRMACTv1Config  # noqa: E402

# arch.name -> the preset of its fields (hrm_ray.models.puzzle.config.PRESETS).
ARCH_PRESETS: dict[str, str] = {"hrm_v1": "hrm_v1", "hrm_v1_gated": "hrm_v1_gated", "transformer_baseline": "hrm_v1"}
EXPLICIT_ATTR = "_explicit_fields"


@dataclass
class PuzzleArchConfig(HRMACTv1Config):
    """The puzzle model (task=puzzle): a preset `name` plus field overrides.

    Fields not set explicitly take the preset's value (`apply_presets`); vocab_size, seq_len and
    num_puzzle_identifiers come from the dataset's dataset.json when 0.
    """
    name: str = "hrm_v1"
    loss_type: str = "stablemax_cross_entropy"


@dataclass
class PuzzleDataConfig:
    """Puzzle training in the paper's terms: group-based epochs (train.epochs), a global batch."""
    data_path: str = ""
    global_batch_size: int = 768
    eval_interval: int = 0             # epochs between evaluations; 0 = only at the end
    eval_subset: int = 1000            # test examples in intermediate evaluations (0 = all); the last is full
    test_split: str = "test"
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    ema: bool = False
    ema_decay: float = 0.999


@dataclass
class Config:
    task: str = "lm"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    arch: PuzzleArchConfig = field(default_factory=PuzzleArchConfig)
    puzzle: PuzzleDataConfig = field(default_factory=PuzzleDataConfig)


# The HRM paper's flag names (its pretrain.py / Hydra config) -> fields, for the puzzle experiments.
PAPER_FLAGS: dict[str, str] = {
    "data_path": "puzzle.data_path",
    "epochs": "train.epochs",
    "eval_interval": "puzzle.eval_interval",
    "lr": "optim.learning_rate",
    "lr_min_ratio": "optim.lr_min_ratio",
    "lr_warmup_steps": "optim.warmup_steps",
    "weight_decay": "optim.weight_decay",
    "puzzle_emb_lr": "puzzle.puzzle_emb_lr",
    "puzzle_emb_weight_decay": "puzzle.puzzle_emb_weight_decay",
    "global_batch_size": "puzzle.global_batch_size",
    "beta1": "optim.beta1",
    "beta2": "optim.beta2",
    "arch": "arch.name",
    "ema": "puzzle.ema",
}


BOOL_WORDS = ("1", "true", "yes", "on", "0", "false", "no", "off")

CHOICES: dict[str, tuple[str, ...]] = {
    "task": ("lm", "puzzle"),
    "arch.name": tuple(ARCH_PRESETS),
    "arch.loss_type": ("stablemax_cross_entropy", "softmax_cross_entropy"),
    "arch.pos_encodings": ("rope", "learned"),
    "model.encoder_backend": ("transformer", "mamba2"),
    "model.bridge.mode": ("residual", "prefix"),
    "optim.optimizer": ("adamw", "adamw_8bit", "adam_atan2"),
    "optim.lr_scheduler": ("cosine", "linear", "constant"),
    "train.mixed_precision": ("none", "bf16", "fp16"),
    "train.wandb": ("auto", "online", "offline", "off"),
}

NON_NEGATIVE = (
    "train.steps", "train.epochs", "train.val_every", "train.eval_loss_patience",
    "train.patience_grace_steps", "train.hrm_gate_warmup_steps", "train.gate_ramp_steps",
    "train.checkpoint_limit", "train.max_nonfinite_steps", "optim.warmup_steps", "optim.weight_decay",
    "optim.grad_clip", "model.dropout", "model.hrm.ds_weight", "model.hrm.halting_weight",
    "data.max_val_samples", "ray.num_workers", "ray.max_failures", "model.vocab_size",
    "puzzle.eval_interval", "puzzle.eval_subset", "puzzle.puzzle_emb_lr", "puzzle.puzzle_emb_weight_decay",
    "arch.puzzle_emb_ndim",
)
POSITIVE = (
    "train.batch_size", "train.eval_batch_size", "train.grad_accum_steps", "train.log_steps",
    "optim.learning_rate", "model.d_model", "model.n_heads", "model.hrm.h_cycles", "model.hrm.l_steps",
    "model.hrm.h_layers", "model.hrm.l_layers", "data.max_seq_len", "data.dataset_workers",
    "model.mamba.chunk_size", "model.bridge.prefix_tokens", "model.bridge.gate_hidden_ratio",
    "ray.cpus_per_worker", "puzzle.global_batch_size", "arch.hidden_size", "arch.num_heads", "arch.H_cycles",
    "arch.L_cycles", "arch.H_layers", "arch.L_layers", "arch.halt_max_steps", "arch.gate_hidden_ratio",
)


def _is_section(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def leaf_paths(node: Any, prefix: str = "") -> dict[str, type]:
    """Every leaf field of the tree as `dotted.path -> type`."""
    hints = typing.get_type_hints(type(node))
    paths: dict[str, type] = {}
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        path = f"{prefix}{f.name}"
        if _is_section(value):
            paths.update(leaf_paths(value, path + "."))
        else:
            paths[path] = hints[f.name]
    return paths


def flag_index(cfg: Config) -> dict[str, str]:
    """Flat flag name -> dotted path, for every leaf whose name is unique in the tree."""
    by_name: dict[str, list[str]] = {}
    for path in leaf_paths(cfg):
        by_name.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    return {name: paths[0] for name, paths in by_name.items() if len(paths) == 1}


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
    return "" if value is None else str(value)


def get_value(cfg: Config, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def set_value(cfg: Config, path: str, raw: Any, where: str = "") -> None:
    paths = leaf_paths(cfg)
    if path not in paths:
        raise UserError(f"{where or 'config'}: unknown key '{path}'{suggest(path, paths)}")
    *parents, leaf = path.split(".")
    node: Any = cfg
    for part in parents:
        node = getattr(node, part)
    setattr(node, leaf, convert(raw, paths[path], where or path))
    mark_explicit(node, [leaf])


def mark_explicit(section: Any, names: typing.Iterable[str] | None = None) -> Any:
    """Record `names` (default: every field) of a config section as set explicitly."""
    names = [f.name for f in dataclasses.fields(section)] if names is None else names
    section.__dict__.setdefault(EXPLICIT_ATTR, set()).update(names)
    return section


def explicit_fields(section: Any) -> set[str]:
    """Fields of a config section set explicitly (YAML or command line), as opposed to left at their default;
    kept on the section object (not a field: not in to_dict, lost by dataclasses.replace)."""
    return set(section.__dict__.get(EXPLICIT_ATTR, ()))


def apply_presets(cfg: Config) -> Config:
    """Fill the fields of `arch` that were not set explicitly from its preset (`arch.name`): presets first,
    explicit values after, whatever their order in the YAML or on the command line."""
    preset_name = ARCH_PRESETS.get(cfg.arch.name)
    if preset_name is None:
        return cfg
    from hrm_ray.models.puzzle.config import PRESETS

    explicit = explicit_fields(cfg.arch)
    for f in dataclasses.fields(HRMACTv1Config):
        if f.name not in explicit:
            setattr(cfg.arch, f.name, getattr(PRESETS[preset_name], f.name))
    return cfg


def apply_mapping(cfg: Config, mapping: dict, where: str, prefix: str = "") -> None:
    """Apply a nested dict (from YAML) onto the tree; unknown keys are errors naming `where`."""
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        try:
            current = get_value(cfg, path)
        except AttributeError:
            known = list(leaf_paths(cfg)) + _section_paths(cfg)
            raise UserError(f"{where}: unknown key '{path}'{suggest(path, known)}") from None
        if _is_section(current):
            if not isinstance(value, dict):
                raise UserError(f"{where}: '{path}' is a section and needs a mapping, got {value!r}")
            apply_mapping(cfg, value, where, path + ".")
        else:
            set_value(cfg, path, value, f"{where}: {path}")


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


def _apply_yaml(path: Path, cfg: Config, profile: str | None) -> set[str]:
    """Apply `path` (its `base:` first), then its overlay for `profile`; return the profiles seen."""
    mapping = _read_mapping(path)
    base = mapping.pop("base", None)
    profiles = mapping.pop("profiles", None) or {}
    if not isinstance(profiles, dict):
        raise UserError(f"{path}: 'profiles' must map profile names to overrides")
    seen = _apply_yaml(path.parent / base, cfg, profile) if base else set()
    apply_mapping(cfg, mapping, str(path))
    if profile in profiles:
        apply_mapping(cfg, profiles[profile] or {}, f"{path} (profile {profile})")
    return seen | set(profiles)


def load_yaml(path: str | Path, cfg: Config | None = None, profile: str | None = None) -> Config:
    """Load a YAML instance of the tree on top of `cfg` (or the defaults).

    A file may name a `base:` file it extends and carry `profiles:` (e.g. demo/gpu/cluster), each a
    partial tree applied after the file itself when that profile is chosen.
    """
    cfg = cfg if cfg is not None else Config()
    seen = _apply_yaml(Path(path), cfg, profile)
    if profile and profile not in seen:
        known = ", ".join(sorted(seen)) or "none"
        raise UserError(f"--profile: '{profile}' is not defined in {path} (profiles: {known}){suggest(profile, seen)}")
    return cfg


def apply_overrides(cfg: Config, args: list[str], aliases: dict[str, str] | None = None) -> Config:
    """Apply `--flag value`, `--flag=value`, `--bool_flag`, `dotted.path=value` onto `cfg`."""
    flags = flag_index(cfg)
    flags.update(aliases or {})
    paths = leaf_paths(cfg)
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token.startswith("--"):
            name, eq, value = token[2:].partition("=")
            target = name if name in paths else flags.get(name)
            ambiguous = [p for p in paths if p.rsplit(".", 1)[-1] == name]
            if target is None and ambiguous:
                raise UserError(f"flag '--{name}' is ambiguous: use one of {', '.join('--' + p for p in ambiguous)}")
            if target is None:
                raise UserError(f"unknown flag '--{name}'{suggest(name, list(flags) + list(paths))}")
            if not eq:
                if paths[target] is bool and (i >= len(args) or args[i].lower() not in BOOL_WORDS):
                    value = "true"
                elif i < len(args):
                    value = args[i]
                    i += 1
                else:
                    raise UserError(f"flag '--{name}' needs a value")
            set_value(cfg, target, value, f"--{name}")
        elif "=" in token:
            path, _, value = token.partition("=")
            set_value(cfg, flags.get(path, path), value, path)
        else:
            raise UserError(f"unexpected argument '{token}' (use --flag value or section.key=value)")
    return cfg


def validate(cfg: Config) -> Config:
    """Reject invalid values before any work starts; every message names the field."""
    problems = []
    for path, allowed in CHOICES.items():
        value = get_value(cfg, path)
        if value not in allowed:
            problems.append(f"{path}: '{value}' is not one of {', '.join(allowed)}{suggest(value, allowed)}")
    problems += [f"{p}: must be >= 0, got {get_value(cfg, p)}" for p in NON_NEGATIVE if get_value(cfg, p) < 0]
    problems += [f"{p}: must be > 0, got {get_value(cfg, p)}" for p in POSITIVE if get_value(cfg, p) <= 0]
    if cfg.model.d_model % cfg.model.n_heads:
        problems.append(f"model.d_model: {cfg.model.d_model} is not divisible by model.n_heads={cfg.model.n_heads}")
    if not 0.0 <= cfg.optim.lr_min_ratio <= 1.0:
        problems.append(f"optim.lr_min_ratio: must be in [0, 1], got {cfg.optim.lr_min_ratio}")
    if cfg.arch.hidden_size % cfg.arch.num_heads:
        problems.append(f"arch.hidden_size: {cfg.arch.hidden_size} is not divisible by arch.num_heads={cfg.arch.num_heads}")
    if not 0.0 <= cfg.puzzle.ema_decay < 1.0:
        problems.append(f"puzzle.ema_decay: must be in [0, 1), got {cfg.puzzle.ema_decay}")
    if cfg.train.steps == 0 and cfg.train.epochs == 0:
        problems.append("train.steps/train.epochs: one of them must be > 0")
    if problems:
        raise UserError("; ".join(problems))
    return cfg


def build_config(config_path: str | None, overrides: list[str],
                 aliases: dict[str, str] | None = None, profile: str | None = None) -> Config:
    if profile and not config_path:
        raise UserError("--profile needs --config (profiles are defined in the config YAML)")
    cfg = load_yaml(config_path, profile=profile) if config_path else Config()
    return validate(apply_presets(apply_overrides(cfg, overrides, aliases)))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(mapping: dict) -> Config:
    cfg = Config()
    apply_mapping(cfg, mapping, "config")
    return cfg


def save_yaml(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
