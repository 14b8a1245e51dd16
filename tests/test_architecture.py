"""The shape of the package (docs/architecture.md): layers point one way, no import cycles, model families
reached only through hrm_ray.models' public modules, short functions.

Imports are read from the source (ast), lazy imports inside functions included: a lazy import is still a
dependency, and a cycle hidden in a function body is still a cycle.
"""
from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hrm_ray"
MAX_FUNCTION_LINES = 80

# Lowest first: a module may import its own layer and those below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "atomic", "console", "storage", "ray_env", "ray_errors"),
    ("models",),
    ("config",),
    ("data",),
    ("evals",),
    ("train",),
    ("infer",),
    ("report",),
    ("tune",),
    ("experiments",),
    ("commands", "cli"),
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text())


@functools.cache
def _imports(path: Path) -> frozenset[str]:
    out: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hrm_ray"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("hrm_ray"))
    return frozenset(out)


def _sources() -> list[Path]:
    # `python -m hrm_ray.train` is an entry point (a command), not part of the train layer.
    return [p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"]


def _top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_package_has_a_layer():
    tops = {_top(_module_name(p)) for p in _sources()} - {""}
    assert tops <= set(LAYER_OF), f"add {sorted(tops - set(LAYER_OF))} to LAYERS (and docs/architecture.md)"


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for path in _sources():
        module = _module_name(path)
        own = LAYER_OF.get(_top(module))
        if own is None:
            continue
        for target in _imports(path):
            layer = LAYER_OF.get(_top(target))
            if layer is not None and layer > own:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles_between_packages():
    edges: dict[str, set[str]] = defaultdict(set)
    for path in _sources():
        top = _top(_module_name(path))
        edges[top].update(t for t in map(_top, _imports(path)) if t and t != top)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return [*trail, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start, [])
            assert cycle is None, " -> ".join(cycle)


# What other layers may import of hrm_ray.models: the registry, the shared puzzle machinery, the language-model
# interface and the shared layers. A family's own package (hrm_act_v1, hrm_lm, trm, ...) is reached through them.
MODELS_PUBLIC = ("registry", "puzzle", "lm", "layers")


def test_no_module_outside_models_imports_a_family_package():
    wrong = []
    for path in _sources():
        module = _module_name(path)
        if _top(module) == "models":
            continue
        for target in _imports(path):
            parts = target.split(".")
            if parts[:2] == ["hrm_ray", "models"] and len(parts) > 2 and parts[2] not in MODELS_PUBLIC:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "import these through hrm_ray.models." + "|".join(MODELS_PUBLIC) + ":\n" + "\n".join(sorted(wrong))


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _sources():
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{_module_name(path)}.{node.name}: {lines} lines")
    assert not long, "\n".join(long)
