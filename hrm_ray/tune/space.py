"""A sweep's search space, as data: the `tune:` section of a config YAML maps dotted config paths to one
Ray Tune distribution each (the section's other keys are the scheduler settings, hrm_ray.config.TuneConfig):

    tune:
      model.bridge.gate_init_bias: {uniform: [-3.5, -1.0]}
      model.hrm.halting_weight: {loguniform: [1.0e-3, 0.2]}
      train.hrm_gate_warmup_steps: {choice: [0, 25, 50, 100]}

Distributions: uniform [LOW, HIGH]; loguniform [LOW, HIGH] (LOW > 0); quniform / qloguniform
[LOW, HIGH, Q] (rounded to a multiple of Q); randint [LOW, HIGH] (integers, HIGH excluded, as in Tune);
choice [A, B, ...]. A knob is either in the space or not: nothing stands for "leave at the base value".
(PyYAML reads `1e-3` as a string; numeric strings are accepted as numbers, `1.0e-3` is the YAML spelling.)
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from hrm_ray.config import suggest
from hrm_ray.errors import UserError

# distribution -> the arguments it needs, as its error message says them
FORMS: dict[str, str] = {
    "uniform": "[LOW, HIGH] with LOW < HIGH",
    "loguniform": "[LOW, HIGH] with 0 < LOW < HIGH",
    "quniform": "[LOW, HIGH, Q] with LOW < HIGH, Q > 0, LOW and HIGH multiples of Q",
    "qloguniform": "[LOW, HIGH, Q] with 0 < LOW < HIGH, Q > 0, LOW and HIGH multiples of Q",
    "randint": "[LOW, HIGH] of integers with LOW < HIGH (HIGH excluded)",
    "choice": "a non-empty list [A, B, ...]",
}
EXAMPLE_KNOB = "model.bridge.gate_init_bias: {uniform: [-3.5, -1.0]}"


@dataclass(frozen=True)
class Knob:
    """One dimension: config `path`, Tune distribution `kind`, its checked `args`."""
    path: str
    kind: str
    args: tuple

    @property
    def quantum(self) -> float | None:
        return self.args[2] if self.kind in ("quniform", "qloguniform") else None

    def domain(self) -> Any:
        """Tune's sampler of this knob (a param_space entry)."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)

    def draw(self, rng: random.Random) -> Any:
        """One value drawn from this knob's distribution with `rng`."""
        if self.kind == "choice":
            return rng.choice(list(self.args))
        if self.kind == "randint":
            return rng.randrange(*self.args)
        low, high = self.args[:2]
        value = math.exp(rng.uniform(math.log(low), math.log(high))) if "log" in self.kind else rng.uniform(low, high)
        q = self.quantum
        return value if q is None else round(value / q) * q

    def corners(self) -> tuple:
        """The values at the ends of the range (every choice): checked against the config before a sweep."""
        if self.kind == "choice":
            return self.args
        if self.kind == "randint":
            return self.args[0], self.args[1] - 1
        return self.args[:2]

    def draws_fractions(self) -> bool:
        """Whether this knob can draw a value that is not a whole number (what an integer field cannot take;
        a choice's or a randint's values are checked one by one)."""
        if self.kind in ("uniform", "loguniform"):
            return True
        q = self.quantum
        return q is not None and not float(q).is_integer()


def parse_knob(path: str, spec: Any) -> Knob:
    """`{kind: args}` of knob `path` as a Knob; every error one line naming the knob."""
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise UserError(f"tune: {path}: expected one distribution such as {{uniform: [LOW, HIGH]}}, got {spec!r}")
    (kind, args), = spec.items()
    if kind not in FORMS:
        raise UserError(f"tune: {path}: unknown distribution '{kind}' (one of {', '.join(FORMS)})"
                        f"{suggest(str(kind), FORMS)}")
    checked = _checked_args(kind, args)
    if checked is None:
        raise UserError(f"tune: {path}: {kind} needs {FORMS[kind]}, got {args!r}")
    return Knob(path, kind, checked)


def _checked_args(kind: str, args: Any) -> tuple | None:
    """The arguments as numbers (a choice's as they are), or None when they do not fit `kind`."""
    if not isinstance(args, (list, tuple)) or not args:
        return None
    if kind == "choice":
        return tuple(args)
    numbers = tuple(_number(a, integer=kind == "randint") for a in args)
    if None in numbers or len(numbers) != (3 if kind.startswith("q") else 2):
        return None
    low, high = numbers[:2]
    if not low < high or ("log" in kind and low <= 0):
        return None
    if kind.startswith("q") and (numbers[2] <= 0 or not all(_multiple(x, numbers[2]) for x in (low, high))):
        return None
    return numbers


def _multiple(value: float, q: float) -> bool:
    return math.isclose(value / q, round(value / q))


def _number(value: Any, integer: bool) -> float | int | None:
    """A finite number (an int when `integer`), from a number or a numeric string; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    if integer:
        return int(value) if float(value).is_integer() else None
    return value


@dataclass(frozen=True)
class SearchSpace:
    """The knobs of a sweep: Tune's param_space and seeded samples."""
    knobs: tuple[Knob, ...]

    @classmethod
    def parse(cls, mapping: dict[str, Any]) -> SearchSpace:
        """The space of a config's `tune.space` (dotted path -> {distribution: args}); empty is an error."""
        if not mapping:
            raise UserError(f"the search space is empty: give the config's `tune:` section at least one knob, "
                            f"e.g. `{EXAMPLE_KNOB}`")
        return cls(tuple(parse_knob(path, spec) for path, spec in mapping.items()))

    def tune_space(self) -> dict[str, Any]:
        return {k.path: k.domain() for k in self.knobs}

    def sample(self, count: int, seed: int) -> list[dict[str, Any]]:
        """`count` points drawn with a seed (the same points for two sweeps to compare side by side)."""
        rng = random.Random(seed)
        return [{k.path: k.draw(rng) for k in self.knobs} for _ in range(count)]
