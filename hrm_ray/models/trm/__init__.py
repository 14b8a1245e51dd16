"""The Tiny Recursive Model (`trm`) of the puzzle task and its presets (trm_mlp, trm_att)."""
from hrm_ray.models.trm.config import PRESETS, TRMConfig
from hrm_ray.models.trm.model import TRM, MixerBlock, RecursionState, compile_units

__all__ = ["PRESETS", "TRM", "MixerBlock", "RecursionState", "TRMConfig", "compile_units"]
