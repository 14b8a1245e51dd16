"""Weights -> proportions -> exact integer quotas (largest remainder method)."""
from __future__ import annotations

import math

from hrm_ray.errors import UserError


def proportions(weights: list[float], names: list[str]) -> list[float]:
    if len(weights) != len(names):
        raise UserError(f"got {len(weights)} weights for {len(names)} sources; give one weight per source")
    for name, weight in zip(names, weights, strict=True):
        if not math.isfinite(weight) or weight < 0:
            raise UserError(f"weight {weight} for {name} must be a finite number >= 0")
    total = sum(weights)
    if total <= 0:
        raise UserError("all weights are zero; at least one source needs a positive weight")
    return [w / total for w in weights]


def largest_remainder(total: int, props: list[float]) -> list[int]:
    """Integers proportional to `props` summing exactly to `total`; ties go to the earlier source."""
    raw = [total * p for p in props]
    quotas = [math.floor(r) for r in raw]
    order = sorted(range(len(props)), key=lambda i: (-(raw[i] - quotas[i]), i))
    for i in order[: total - sum(quotas)]:
        quotas[i] += 1
    return quotas


def max_total_without_reuse(available: list[int], props: list[float]) -> int:
    """The largest mixture in which no source needs to repeat a sample."""
    return min(math.floor(n / p + 1e-9) for n, p in zip(available, props, strict=True) if p > 0)


def plan_mix(paths: list[str], weights: list[float], available: list[int], num_samples: int | None) -> list[dict]:
    """Per-source quotas of a mixture: num_samples None is the largest mix repeating nothing."""
    props = proportions(weights, paths)
    for path, n, p in zip(paths, available, props, strict=True):
        if p > 0 and n == 0:
            raise UserError(f"{path}: split is empty but has weight > 0")
    if num_samples is not None and num_samples < 0:
        raise UserError(f"number of samples must be >= 0, got {num_samples}")
    total = max_total_without_reuse(available, props) if num_samples is None else num_samples
    quotas = largest_remainder(total, props)
    return [{"path": path, "weight": w, "proportion": p, "available": n, "quota": q, "reused": max(0, q - n)}
            for path, w, p, n, q in zip(paths, weights, props, available, quotas, strict=True)]
