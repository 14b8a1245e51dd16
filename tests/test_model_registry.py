"""The model registry (names, presets, suggestions, a tiny build of every family and preset, registering a
family, README's table of families) and the models' isolation: hrm_ray.models imports nothing else of hrm_ray."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hrm_ray.models import registry
from hrm_ray.models.hrm_act_v1 import HRMACTv1, HRMACTv1Config
from hrm_ray.models.hrm_lm import HRMLanguageModel, HRMLMConfig
from hrm_ray.models.transformer_baseline import PuzzleTransformer, TransformerBaselineConfig
from hrm_ray.models.trm import TRM, TRMConfig

pytestmark = pytest.mark.timeout(60)

TINY = {
    "hrm_lm": dict(vocab_size=12, d_model=16, n_heads=2, encoder_layers=1, decoder_layers=1, mlp_ratio=2.0),
    "puzzle": dict(vocab_size=6, seq_len=8, num_puzzle_identifiers=3, puzzle_emb_ndim=16, d_model=16, n_heads=2,
                   mlp_ratio=2.0, h_layers=1, l_layers=1, halt_max_steps=2),
}


def _field_paths(config_class: type, prefix: str = "") -> set[str]:
    paths = set()
    for f in dataclasses.fields(config_class):
        factory = f.default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
            paths |= _field_paths(factory, f"{prefix}{f.name}.")
        else:
            paths.add(prefix + f.name)
    return paths


def test_names_families_and_tasks():
    assert registry.names() == ["hrm_lm", "hrm_act_v1", "transformer_baseline", "trm", "hrm_v1", "hrm_v1_gated",
                                "trm_mlp", "trm_att"]
    expected = {"hrm_lm": (HRMLMConfig, "lm"), "hrm_act_v1": (HRMACTv1Config, "puzzle"),
                "transformer_baseline": (TransformerBaselineConfig, "puzzle"), "trm": (TRMConfig, "puzzle")}
    for name, (config_class, task) in expected.items():
        family, values = registry.resolve(name)
        assert (family.name, family.config_class, family.task, values) == (name, config_class, task, {})
        assert config_class().name == name


def test_presets_are_a_family_plus_values():
    family, values = registry.resolve("hrm_v1")
    assert family.name == "hrm_act_v1" and values == {}
    family, values = registry.resolve("hrm_v1_gated")
    assert family.name == "hrm_act_v1" and values == {"use_gating": True}
    plain, gated = registry.default_config("hrm_v1"), registry.default_config("hrm_v1_gated")
    assert type(plain) is type(gated) is HRMACTv1Config
    assert (plain.name, gated.name) == ("hrm_v1", "hrm_v1_gated")
    assert dataclasses.replace(plain, name="hrm_act_v1") == HRMACTv1Config()
    assert dataclasses.replace(gated, name="hrm_act_v1") == HRMACTv1Config(use_gating=True)
    assert registry.default_config("hrm_v1_gated", use_gating=False).use_gating is False  # overrides win


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ValueError, match="unknown model 'hrm_v1_gate' \\(did you mean 'hrm_v1_gated'\\?\\)"):
        registry.resolve("hrm_v1_gate")
    with pytest.raises(ValueError, match="did you mean 'transformer_baseline'"):
        registry.default_config("transformer_basline")
    with pytest.raises(ValueError, match="unknown hrm_act_v1 config field 'hidden_size' \\(did you mean 'd_model'"):
        registry.default_config("hrm_v1", hidden_size=8)  # a former name suggests the field it became
    with pytest.raises(ValueError, match="field 'h_cycle' \\(did you mean 'h_cycles'"):
        registry.default_config("hrm_v1", h_cycle=8)
    with pytest.raises(ValueError, match="unknown model 'nope'; choose from hrm_lm, hrm_act_v1"):
        registry.build_model(dataclasses.replace(HRMACTv1Config(), name="nope"))


def test_aliases_name_fields_of_their_config():
    for family in registry.FAMILIES.values():
        fields = _field_paths(family.config_class)
        assert family.config_class.ALIASES, family.name
        for old, path in family.config_class.ALIASES.items():
            assert path in fields and old not in fields, (family.name, old, path)
    assert HRMLMConfig.ALIASES == {"l_steps": "hrm.l_cycles"}
    assert HRMACTv1Config.ALIASES["hidden_size"] == "d_model" and HRMACTv1Config.ALIASES["H_cycles"] == "h_cycles"


def test_model_classes():
    assert [registry.FAMILIES[n].build for n in ("hrm_lm", "hrm_act_v1", "transformer_baseline", "trm")] == [
        HRMLanguageModel, HRMACTv1, PuzzleTransformer, TRM]


@pytest.mark.parametrize("name", registry.names())
def test_every_family_and_preset_builds_a_tiny_model(name: str):
    family, _ = registry.resolve(name)
    fields = {f.name for f in dataclasses.fields(family.config_class)}
    sizes = {k: v for k, v in TINY["hrm_lm" if family.task == "lm" else "puzzle"].items() if k in fields}
    torch.manual_seed(0)
    model = registry.build_model(registry.default_config(name, **sizes))
    assert type(model) is family.build and model.config.name == name
    assert sum(p.numel() for p in model.parameters()) > 0
    assert all(model.get_submodule(unit) is not None for unit in family.compile_units(model))
    if name == "hrm_v1_gated":
        assert hasattr(model.inner, "L_gate")


def readme_families() -> dict[str, list[str]]:
    """README.md's table of families: family -> its presets."""
    rows = {}
    for line in (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 4 and cells[1] in ("lm", "puzzle"):
            rows[cells[0].strip("`")] = re.findall(r"`([^`]+)`", cells[2])
    return rows


def test_readme_table_lists_the_registry():
    assert readme_families() == {name: list(f.presets) for name, f in registry.FAMILIES.items()}


def test_register_adds_a_family_and_its_presets():
    family = registry.Family("tiny_copy", HRMACTv1Config, HRMACTv1, "puzzle", {"tiny_copy_small": {"d_model": 8}})
    registry.register(family)
    try:
        assert registry.resolve("tiny_copy_small") == (family, {"d_model": 8})
        with pytest.raises(ValueError, match="tiny_copy, tiny_copy_small already registered"):
            registry.register(family)
    finally:
        registry.unregister("tiny_copy")
    assert "tiny_copy" not in registry.names() and "tiny_copy_small" not in registry.names()


def test_build_checks_the_config_class():
    cfg = dataclasses.replace(registry.default_config("hrm_v1", **TINY["puzzle"]), name="hrm_lm")
    with pytest.raises(TypeError, match="'hrm_lm' is built from a HRMLMConfig, got a HRMACTv1Config"):
        registry.build_model(cfg)


ISOLATION = """
import importlib, pkgutil, sys
import hrm_ray.models as models
names = [m.name for m in pkgutil.walk_packages(models.__path__, "hrm_ray.models.")]
for name in names:
    importlib.import_module(name)
outside = sorted(m for m in sys.modules if m.startswith("hrm_ray") and m != "hrm_ray"
                 and not m.startswith("hrm_ray.models"))
print(len(names), outside)
"""


def test_models_import_nothing_else_of_hrm_ray():
    out = subprocess.run([sys.executable, "-c", ISOLATION], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    count, outside = out.stdout.strip().split(" ", 1)
    assert int(count) >= 15 and outside == "[]", out.stdout


def test_the_baseline_starts_from_the_hrm_embeddings_and_heads():
    """At one seed the baseline's embeddings and heads are the HRM's: it draws what the HRM's H and L modules
    draw (without building them) before its heads, and its own blocks after."""
    cfg = registry.default_config("hrm_v1", **{**TINY["puzzle"], "h_layers": 2, "pos_encodings": "learned"})
    torch.manual_seed(5)
    hrm = registry.build_model(cfg).state_dict()
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "name"}
    torch.manual_seed(5)
    baseline = registry.build_model(registry.default_config("transformer_baseline", **fields)).state_dict()
    shared = [k for k in hrm if not k.startswith(("inner.H_", "inner.L_"))]
    assert shared and all(torch.equal(hrm[k], baseline[k]) for k in shared)
    assert not torch.equal(baseline["inner.layers.layers.0.attn.qkv.weight"], hrm["inner.H_level.layers.0.attn.qkv.weight"])
