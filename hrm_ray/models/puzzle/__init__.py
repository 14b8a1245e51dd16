"""The puzzle HRM of the paper (ACT v1), its gated variant, losses and presets."""
from hrm_ray.models.puzzle.act_v1 import ACTCarry, HRMACTv1, InnerCarry
from hrm_ray.models.puzzle.config import PRESETS, HRMACTv1Config, preset
from hrm_ray.models.puzzle.layers import PuzzleEmbedding, puzzle_embeddings
from hrm_ray.models.puzzle.losses import (
    ACTLossHead,
    reduce_metrics,
    softmax_cross_entropy,
    stablemax_cross_entropy,
)

__all__ = [
    "ACTCarry", "ACTLossHead", "HRMACTv1", "HRMACTv1Config", "InnerCarry", "PRESETS", "PuzzleEmbedding",
    "preset", "puzzle_embeddings", "reduce_metrics", "softmax_cross_entropy", "stablemax_cross_entropy",
]
