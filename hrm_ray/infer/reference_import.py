"""`hrm-ray import`: the papers' released checkpoints as hrm-ray model directories.

The reference trainers (sapientinc/HRM and SamsungSAILMontreal/TinyRecursiveModels, `pretrain.py`) save
`torch.save(loss_head.state_dict())` as `step_N` files, with `all_config.yaml` (its `arch:` section: the
model class, H_cycles, hidden_size, ...) in the same directory. Their parameters sit under `model.inner.`,
prefixed `_orig_mod.` when the model was torch.compile'd; their modules differ from ours in names only:

| reference                                        | hrm-ray                          |
|--------------------------------------------------|----------------------------------|
| inner.embed_tokens.embedding_weight              | inner.embed_tokens.weight        |
| inner.embed_pos.embedding_weight                 | inner.embed_pos                  |
| ...layers.N.self_attn.qkv_proj / o_proj          | ...layers.N.attn.qkv / attn.out  |
| ...layers.N.mlp.gate_up_proj / down_proj         | ...layers.N.mlp.gate_up / down   |
| TRM: inner.L_level (its one network)             | inner.net                        |
| TRM: ...layers.N.mlp_t (the MLP over positions)  | ...layers.N.token_mlp            |
| TRM: inner.H_init / L_init (answer / latent)     | inner.y_init / z_init            |

The data fields (vocab_size, the puzzle-embedding table, seq_len where the weights fix it) come from the
tensors' shapes; the rest from `arch:`. The file is read weights-only, like every checkpoint here.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import torch
import yaml

from hrm_ray.atomic import staged_dir
from hrm_ray.config import Config, save_yaml
from hrm_ray.data.puzzles.format import PuzzleDatasetMetadata
from hrm_ray.errors import UserError
from hrm_ray.models import registry
from hrm_ray.train.checkpoint import META_FILE, MODEL_FILE
from hrm_ray.train.puzzle_task import build_puzzle_model
from hrm_ray.train.safe_files import load_pickled_data, save_weights

REFERENCE_CONFIG = "all_config.yaml"
COMPILED_PREFIX = "_orig_mod."
# The reference model classes (arch.name) -> our model name.
ARCHS = {
    "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1": "hrm_act_v1",          # sapientinc/HRM
    "recursive_reasoning.hrm@HierarchicalReasoningModel_ACTV1": "hrm_act_v1", # TRM repository's copy of it
    "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1": "trm",
}
# arch keys -> our model fields (the same value); shape fields are checked against the weights instead.
ARCH_FIELDS = {
    "H_cycles": "h_cycles", "L_cycles": "l_cycles", "H_layers": "h_layers", "L_layers": "l_layers",
    "num_heads": "n_heads", "expansion": "mlp_ratio", "pos_encodings": "pos_encodings", "rms_norm_eps": "norm_eps",
    "rope_theta": "rope_theta", "halt_max_steps": "halt_max_steps", "halt_exploration_prob": "halt_exploration_prob",
}
SHAPE_KEYS = ("hidden_size", "puzzle_emb_ndim", "vocab_size", "num_puzzle_identifiers", "seq_len")
# Read elsewhere (name, loss, the TRM's three) or not a model setting (batch size, the forward's dtype).
OTHER_KEYS = ("name", "loss", "mlp_t", "puzzle_emb_len", "no_ACT_continue", "batch_size", "forward_dtype")
# Buffers the reference keeps out of its state_dict (non-persistent); skipped should an old save hold them.
DERIVED = ("rotary_emb.cos_cached", "rotary_emb.sin_cached", "puzzle_emb.local_weights", "puzzle_emb.local_ids")
COMMON_NAMES = [
    ("inner.embed_tokens.embedding_weight", "inner.embed_tokens.weight"),
    ("inner.embed_pos.embedding_weight", "inner.embed_pos"),
    (".self_attn.qkv_proj.", ".attn.qkv."), (".self_attn.o_proj.", ".attn.out."),
    (".mlp.gate_up_proj.", ".mlp.gate_up."), (".mlp.down_proj.", ".mlp.down."),
]
NAMES = {
    "hrm_act_v1": COMMON_NAMES,
    "trm": [*COMMON_NAMES, ("inner.L_level.", "inner.net."), ("inner.H_init", "inner.y_init"),
            ("inner.L_init", "inner.z_init"), (".mlp_t.gate_up_proj.", ".token_mlp.gate_up."),
            (".mlp_t.down_proj.", ".token_mlp.down.")],
}


@dataclasses.dataclass
class Imported:
    directory: Path
    model_name: str
    arch: str
    notes: list[str]


def rename(name: str, family: str, reverse: bool = False) -> str:
    """A reference parameter name as ours (`reverse`: ours as the reference's)."""
    for theirs, ours in NAMES[family]:
        name = name.replace(ours, theirs) if reverse else name.replace(theirs, ours)
    return name


def find_checkpoint(source: Path) -> Path:
    """`source` itself, or in a directory its newest `step_N` file, else its one file named `checkpoint`."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise UserError(f"hrm-ray import: not found: {source}")
    steps = [p for p in source.iterdir() if re.fullmatch(r"step_\d+", p.name) and p.is_file()]
    if steps:
        return max(steps, key=lambda p: int(p.name.split("_")[1]))
    if (source / "checkpoint").is_file():
        return source / "checkpoint"
    raise UserError(f"hrm-ray import: {source} holds no step_N or checkpoint file (the reference trainers' names); "
                    f"give the weights file itself")


def read_arch(config_path: Path) -> tuple[str, dict[str, Any]]:
    """(our model name, the `arch:` section) of a reference all_config.yaml."""
    if not config_path.is_file():
        raise UserError(f"hrm-ray import: {config_path} not found (the reference run's config; or pass --config)")
    try:
        arch = (yaml.safe_load(config_path.read_text()) or {}).get("arch")
    except (yaml.YAMLError, AttributeError) as exc:
        raise UserError(f"{config_path}: not a YAML mapping ({' '.join(str(exc).split())})") from None
    if not isinstance(arch, dict) or "name" not in arch:
        raise UserError(f"{config_path}: no arch: section with a name (not a reference all_config.yaml?)")
    if arch["name"] not in ARCHS:
        raise UserError(f"{config_path}: arch.name {arch['name']!r} cannot be imported; supported: {', '.join(ARCHS)}")
    return ARCHS[arch["name"]], arch


def reference_weights(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors by their names under the loss head (`model.inner...`), wrappers removed."""
    state = load_pickled_data(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path}: not a state_dict of tensors (the reference trainers save one)")
    out = {}
    for name, tensor in state.items():
        name = name.removeprefix(COMPILED_PREFIX)
        name = name if name.startswith("model.") else f"model.{name}"
        if not name.endswith(DERIVED):
            out[name] = tensor
    return out


def _shape(weights: dict[str, torch.Tensor], name: str, path: Path) -> torch.Size:
    if name not in weights:
        raise UserError(f"{path}: no parameter '{name}' (not an HRM or TRM checkpoint of the reference trainers?)")
    return weights[name].shape


def _data_fields(family: str, arch: dict[str, Any], weights: dict[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """vocab_size, d_model and the puzzle-embedding table from the tensors (checked against `arch`)."""
    vocab, d_model = _shape(weights, "model.inner.embed_tokens.embedding_weight", path)
    table = weights.get("model.inner.puzzle_emb.weights")
    ids, ndim = tuple(table.shape) if table is not None else (1, 0)
    found = {"hidden_size": d_model, "puzzle_emb_ndim": ndim, "vocab_size": vocab, "num_puzzle_identifiers": ids}
    for key, value in found.items():
        if isinstance(arch.get(key), int) and arch[key] != value:
            raise UserError(f"{path}: arch.{key} is {arch[key]} in the config, {value} in the weights")
    return {"vocab_size": vocab, "d_model": d_model, "num_puzzle_identifiers": ids, "puzzle_emb_ndim": ndim}


def _trm_fields(arch: dict[str, Any]) -> dict[str, Any]:
    """The TRM's own settings: its MLP over positions, positions off, the puzzle-embedding prefix length, the
    Q-continue head."""
    out: dict[str, Any] = {"token_mixer": "mlp" if arch.get("mlp_t") else "attention"}
    if arch.get("pos_encodings") not in ("rope", "learned"):
        out["pos_encodings"] = "none"   # the reference runs without positions for any other value
    out["puzzle_emb_len"] = int(arch.get("puzzle_emb_len", 16))   # the reference's default; 0: ceil(ndim / d)
    out["no_act_continue"] = bool(arch.get("no_ACT_continue", True))
    return out


def _prefix_len(family: str, fields: dict[str, Any]) -> int:
    """Positions the puzzle embedding takes before the sequence (the reference's rule, and ours)."""
    if not fields["puzzle_emb_ndim"]:
        return 0
    return fields.get("puzzle_emb_len", 0) or -(fields["puzzle_emb_ndim"] // -fields["d_model"])


def _seq_len(family: str, arch: dict[str, Any], fields: dict[str, Any], weights: dict[str, torch.Tensor],
             dataset: str, notes: list[str]) -> int:
    """seq_len where the weights fix it (learned positions, the TRM's MLP over positions), `arch.seq_len` or the
    dataset's, which must agree; else 0: an evaluation takes it from its dataset."""
    found = []
    for name in ("model.inner.embed_pos.embedding_weight", "model.inner.L_level.layers.0.mlp_t.down_proj.weight"):
        if name in weights:
            found.append(("the weights", weights[name].shape[0] - _prefix_len(family, fields)))
    if isinstance(arch.get("seq_len"), int):
        found.append(("arch.seq_len", arch["seq_len"]))
    if dataset:
        found.append(("--dataset", _dataset_metadata(dataset, fields).seq_len))
    for where, value in found[1:]:
        if value != found[0][1]:
            raise UserError(f"seq_len: {found[0][0]} says {found[0][1]}, {where} says {value}")
    if not found:
        notes.append("seq_len is left to the dataset an evaluation reads (the weights do not fix it)")
    return found[0][1] if found else 0


def _dataset_metadata(dataset: str, fields: dict[str, Any]) -> PuzzleDatasetMetadata:
    try:
        meta = PuzzleDatasetMetadata.load(Path(dataset) / "train" / "dataset.json")
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"--dataset: {exc}") from None
    for key in ("vocab_size", "num_puzzle_identifiers"):
        if getattr(meta, key) != fields[key]:
            raise UserError(f"--dataset: its {key} is {getattr(meta, key)}, the checkpoint's {fields[key]} "
                            f"(another dataset build?)")
    return meta


def model_fields(family: str, arch: dict[str, Any], weights: dict[str, torch.Tensor], path: Path, dataset: str,
                 notes: list[str]) -> dict[str, Any]:
    """Our model config's fields for the reference model `arch` describes and `weights` holds."""
    unknown = [k for k in arch if k not in ARCH_FIELDS and k not in SHAPE_KEYS and k not in OTHER_KEYS]
    if unknown:
        raise UserError(f"arch.{unknown[0]}: a setting hrm-ray's {family} has no counterpart for")
    fields = {ours: arch[key] for key, ours in ARCH_FIELDS.items() if key in arch}
    fields.update(_data_fields(family, arch, weights, path))
    if "loss_type" in (arch.get("loss") or {}):
        fields["loss_type"] = arch["loss"]["loss_type"]
    if family == "trm":
        fields.pop("h_layers", None)   # the reference TRM ignores H_layers: it has one network
        fields.update(_trm_fields(arch))
    elif arch.get("mlp_t"):
        raise UserError("arch.mlp_t: hrm-ray's hrm_act_v1 has no MLP over positions (only the trm has)")
    fields["seq_len"] = _seq_len(family, arch, fields, weights, dataset, notes)
    return fields


def _fit(tensor: torch.Tensor, expected: torch.Tensor, name: str, family: str, path: Path) -> torch.Tensor:
    """`tensor` in the dtype of our parameter (the reference keeps H_init / L_init in its forward dtype)."""
    if tensor.shape != expected.shape:
        raise UserError(f"{path}: '{name}' has shape {tuple(tensor.shape)}, the {family} its all_config.yaml "
                        f"describes needs {tuple(expected.shape)}")
    return tensor.to(expected.dtype).contiguous()


def build_imported(family: str, fields: dict[str, Any], weights: dict[str, torch.Tensor], path: Path
                   ) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Our model (the loss head, as training saves it) holding the reference weights, and its state_dict."""
    try:
        config = registry.default_config(family, **{**fields, "seq_len": fields["seq_len"] or 1})
        head = build_puzzle_model(config)
    except ValueError as exc:
        raise UserError(f"{path}: its all_config.yaml gives no valid {family}: {exc}") from None
    expected = head.state_dict()
    state = {}
    for name, tensor in weights.items():
        ours = rename(name, family)
        if ours not in expected:
            raise UserError(f"{path}: parameter '{name}' has no counterpart in hrm-ray's {family} (not a checkpoint "
                            f"of the model its all_config.yaml names?)")
        state[ours] = _fit(tensor, expected[ours], name, family, path)
    missing = [name for name in expected if name not in state]
    if missing:
        raise UserError(f"{path}: no parameter '{rename(missing[0], family, reverse=True)}', which the {family} its "
                        f"all_config.yaml describes has")
    head.load_state_dict(state)
    return head, state


@torch.no_grad()
def check_forward(head: torch.nn.Module, vocab_size: int, seq_len: int) -> None:
    """One improvement step on two random puzzles: finite logits of the right shape."""
    model = head.model.eval()
    batch = {"inputs": torch.randint(0, vocab_size, (2, seq_len)), "labels": torch.zeros(2, seq_len, dtype=torch.long),
             "puzzle_identifiers": torch.zeros(2, dtype=torch.long)}
    _, outputs = model(model.initial_carry(batch), batch)
    logits = outputs["logits"]
    if logits.shape != (2, seq_len, vocab_size) or not torch.isfinite(logits).all():
        raise UserError(f"the imported model's forward gives logits of shape {tuple(logits.shape)}, finite: "
                        f"{bool(torch.isfinite(logits).all())}")


def import_reference(source: str | Path, out: str | Path, config: str | Path | None = None, dataset: str = ""
                     ) -> Imported:
    """Write `out` (config.yaml, model.safetensors, meta.json), a model directory `hrm-ray eval --checkpoint`
    reads, from a reference checkpoint and its all_config.yaml."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out: {out} already exists (choose a new directory)")
    path = find_checkpoint(Path(source))
    config_path = Path(config) if config else path.parent / REFERENCE_CONFIG
    family, arch = read_arch(config_path)
    weights = reference_weights(path)
    notes: list[str] = []
    fields = model_fields(family, arch, weights, path, dataset, notes)
    head, state = build_imported(family, fields, weights, path)
    check_forward(head, fields["vocab_size"], fields["seq_len"] or 1)
    cfg = Config(model=registry.default_config(family, **fields))
    if dataset:
        cfg.data.dataset = str(Path(dataset).absolute())
    meta = {"imported_from": str(path.absolute()), "reference_arch": arch["name"], "notes": notes}
    step = re.fullmatch(r"step_(\d+)", path.name)
    if step:
        meta["step"] = int(step.group(1))
    with staged_dir(out) as staging:
        save_weights(state, staging / MODEL_FILE)
        save_yaml(cfg, staging / "config.yaml")
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    return Imported(out, family, arch["name"], notes)
