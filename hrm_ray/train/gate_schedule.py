"""Gate scale of the HRM bridge: 0 while warming up, then a linear ramp to 1."""
from __future__ import annotations


def gate_scale(step: int, warmup_steps: int, ramp_steps: int) -> float:
    """Scale for optimizer step `step` (0-based): 0 for `warmup_steps` steps, then 1/ramp, 2/ramp, ... 1."""
    if step < warmup_steps:
        return 0.0
    if ramp_steps <= 0:
        return 1.0
    return min(1.0, (step - warmup_steps + 1) / ramp_steps)


def gate_closed(step: int, warmup_steps: int, ramp_steps: int) -> bool:
    """True while the gate scale is 0: the HRM parameters are frozen then."""
    return gate_scale(step, warmup_steps, ramp_steps) == 0.0
