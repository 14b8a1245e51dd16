"""The plain-transformer baseline of the puzzle HRM (`transformer_baseline`)."""
from hrm_ray.models.transformer_baseline.config import TransformerBaselineConfig
from hrm_ray.models.transformer_baseline.model import PuzzleTransformer, SingleStepCarry, compile_units

__all__ = ["PuzzleTransformer", "SingleStepCarry", "TransformerBaselineConfig", "compile_units"]
