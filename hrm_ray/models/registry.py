"""Model families by name: `model.name` -> the family's config class, build function and training task.

A name is a family ("hrm_lm", "hrm_act_v1", "transformer_baseline", "trm") or a named preset of one: a family
plus field values over its defaults ("hrm_v1", "hrm_v1_gated"). Adding a family is its own package
(config.py, model.py) and one line in FAMILIES.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from hrm_ray.models.hrm_act_v1 import PRESETS as HRM_ACT_V1_PRESETS
from hrm_ray.models.hrm_act_v1 import HRMACTv1, HRMACTv1Config
from hrm_ray.models.hrm_lm import HRMLanguageModel, HRMLMConfig
from hrm_ray.models.transformer_baseline import PuzzleTransformer, TransformerBaselineConfig
from hrm_ray.models.trm import PRESETS as TRM_PRESETS
from hrm_ray.models.trm import TRM, TRMConfig


@dataclass(frozen=True)
class Family:
    name: str
    config_class: type
    build: Callable[[Any], nn.Module]  # config -> model
    task: str                          # the task that trains it: "lm" or "puzzle"
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # preset name -> field values


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("hrm_lm", HRMLMConfig, HRMLanguageModel, "lm"),
    Family("hrm_act_v1", HRMACTv1Config, HRMACTv1, "puzzle", HRM_ACT_V1_PRESETS),
    Family("transformer_baseline", TransformerBaselineConfig, PuzzleTransformer, "puzzle"),
    Family("trm", TRMConfig, TRM, "puzzle", TRM_PRESETS),
)}
# preset name -> (family, field values)
PRESETS: dict[str, tuple[Family, Mapping[str, Any]]] = {
    preset: (family, values) for family in FAMILIES.values() for preset, values in family.presets.items()}


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


def default_config(name: str, **overrides: Any) -> Any:
    """The config of `name`: its family's defaults, the preset's values, then `overrides` (top-level
    fields); `name` is recorded in the config so that `build_model` finds the family again."""
    family, values = resolve(name)
    fields = [f.name for f in dataclasses.fields(family.config_class)]
    for key in overrides:
        if key not in fields:
            raise _unknown(f"{family.name} config field", key, fields, family.config_class.ALIASES)
    return family.config_class(**{**values, **overrides, "name": name})


def build_model(model_config: Any) -> nn.Module:
    """The model of the family `model_config.name` names, built from `model_config`."""
    family, _ = resolve(model_config.name)
    if not isinstance(model_config, family.config_class):
        raise TypeError(f"model {model_config.name!r} is built from a {family.config_class.__name__}, "
                        f"got a {type(model_config).__name__}")
    return family.build(model_config)
