"""Model families by name: `model.name` -> the family's whole spec on the model side (`Family`): its config
class, build function, the task that trains it, its presets and its `--compile` units.

A name is a family (FAMILIES) or a named preset of one: a family plus field values over its defaults
("hrm_v1", "hrm_v1_gated", "trm_mlp", ...). Adding a family is its own package (config.py, model.py, its
compile units) and one line in BUILT_IN, or one `register(Family(...))` call from outside
(docs/architecture.md, "How to add a model family").
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hrm_ray.models import hrm_act_v1, hrm_lm, transformer_baseline, trm


def whole_model(model: nn.Module) -> list[str]:
    """A family without units of its own compiles whole."""
    return [""]


@dataclass(frozen=True)
class Family:
    name: str
    config_class: type
    build: Callable[[Any], nn.Module]  # config -> model
    task: str                          # the task that trains it: "lm" or "puzzle"
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # preset name -> field values
    # model -> dotted names of the submodules `--compile` compiles, relative to the model ("": all of it)
    compile_units: Callable[[nn.Module], list[str]] = whole_model
    # the module names the papers' repositories give this model (an arch YAML's `name: module@Class`)
    paper_modules: tuple[str, ...] = ()

    @property
    def init_values(self) -> tuple[str, ...]:
        """The config fields that set parameters' initial values (gate and halting biases): what
        `train.init_values` and a sweep may re-apply over a checkpoint's weights."""
        return tuple(getattr(self.config_class, "INIT_VALUES", ()))

    @property
    def train_defaults(self) -> Mapping[str, Any]:
        """The family's own defaults of `train` fields (the TRM trains with EMA), where a config leaves them unset."""
        return dict(getattr(self.config_class, "TRAIN_DEFAULTS", {}))


FAMILIES: dict[str, Family] = {}
# preset name -> (family, field values)
PRESETS: dict[str, tuple[Family, Mapping[str, Any]]] = {}


def register(family: Family) -> Family:
    """Add `family` (and its presets) to the names `model.name` accepts; a name taken already is an error."""
    taken = [n for n in (family.name, *family.presets) if n in FAMILIES or n in PRESETS]
    if taken:
        raise ValueError(f"model family {family.name!r}: {', '.join(taken)} already registered")
    FAMILIES[family.name] = family
    PRESETS.update({preset: (family, values) for preset, values in family.presets.items()})
    return family


def unregister(name: str) -> None:
    """Remove the family `name` and its presets (a test's family, registered for its duration)."""
    family = FAMILIES.pop(name)
    for preset in family.presets:
        PRESETS.pop(preset)


# The families of hrm-ray: adding one is its own package and one line here.
BUILT_IN: tuple[Family, ...] = (
    Family("hrm_lm", hrm_lm.HRMLMConfig, hrm_lm.HRMLanguageModel, "lm", compile_units=hrm_lm.compile_units),
    Family("hrm_act_v1", hrm_act_v1.HRMACTv1Config, hrm_act_v1.HRMACTv1, "puzzle", hrm_act_v1.PRESETS,
           hrm_act_v1.compile_units, paper_modules=("hrm_act_v1",)),
    Family("transformer_baseline", transformer_baseline.TransformerBaselineConfig,
           transformer_baseline.PuzzleTransformer, "puzzle", compile_units=transformer_baseline.compile_units),
    Family("trm", trm.TRMConfig, trm.TRM, "puzzle", trm.PRESETS, trm.compile_units, paper_modules=("trm",)),
)
for _family in BUILT_IN:
    register(_family)


def names() -> list[str]:
    """Every name `model.name` accepts: the families, then the presets."""
    return [*FAMILIES, *PRESETS]


def _unknown(what: str, name: str, known: list[str], aliases: Mapping[str, str] | None = None) -> ValueError:
    """An error naming `name` and the closest of `known` (a close former name suggests its new name)."""
    aliases = aliases or {}
    close = difflib.get_close_matches(name, [*known, *aliases], n=1)
    hint = f" (did you mean {aliases.get(close[0], close[0])!r}?)" if close else ""
    return ValueError(f"unknown {what} {name!r}{hint}; choose from {', '.join(known)}")


def resolve(name: str) -> tuple[Family, dict[str, Any]]:
    """The family of `name` and the field values its preset sets ({} for a family's own name)."""
    if name in FAMILIES:
        return FAMILIES[name], {}
    if name in PRESETS:
        family, values = PRESETS[name]
        return family, dict(values)
    raise _unknown("model", name, names())


def family_of(model_config: Any) -> Family:
    """The family of a model config (the one its `name` names)."""
    return resolve(model_config.name)[0]


def default_config(name: str, **overrides: Any) -> Any:
    """The config of `name`: its family's defaults, the preset's values, then `overrides` (top-level
    fields); `name` is recorded in the config so that `build_model` finds the family again."""
    family, values = resolve(name)
    fields = [f.name for f in dataclasses.fields(family.config_class)]
    for key in overrides:
        if key not in fields:
            raise _unknown(f"{family.name} config field", key, fields, family.config_class.ALIASES)
    return family.config_class(**{**values, **overrides, "name": name})


def paper_family(module: str) -> str | None:
    """The family whose model a papers' module (`hrm_act_v1` of `hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1`)
    is, or None."""
    return next((f.name for f in FAMILIES.values() if module in f.paper_modules), None)


def build_model(model_config: Any) -> nn.Module:
    """The model of the family `model_config.name` names, built from `model_config`."""
    family, _ = resolve(model_config.name)
    if not isinstance(model_config, family.config_class):
        raise TypeError(f"model {model_config.name!r} is built from a {family.config_class.__name__}, "
                        f"got a {type(model_config).__name__}")
    return family.build(model_config)


def compile_units(model: nn.Module) -> list[str]:
    """Dotted names of the submodules of `model` that `--compile` compiles: the units of the family of the
    outermost module in it that carries a registered `config` (the model itself, or the model a loss head
    wraps), prefixed with its path; a module without a family compiles whole ("")."""
    for path, module in model.named_modules():
        name = getattr(getattr(module, "config", None), "name", None)
        if isinstance(name, str) and (name in FAMILIES or name in PRESETS):
            prefix = f"{path}." if path else ""
            return [f"{prefix}{unit}".rstrip(".") for unit in resolve(name)[0].compile_units(module)]
    return [""]
