"""The puzzle HRM of the paper (ACT v1, `hrm_act_v1`), its gated variant and presets. What it shares with the
other puzzle families (inputs, ACT carry, loss head, puzzle embedding) lives in hrm_ray.models.puzzle."""
from hrm_ray.models.hrm_act_v1.config import PRESETS, HRMACTv1Config
from hrm_ray.models.hrm_act_v1.model import HRMACTv1, InnerCarry, compile_units

__all__ = ["HRMACTv1", "HRMACTv1Config", "InnerCarry", "PRESETS", "compile_units"]
