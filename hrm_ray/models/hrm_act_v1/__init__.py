"""The puzzle HRM of the paper (ACT v1, `hrm_act_v1`), its gated variant, its losses and presets."""
from hrm_ray.models.hrm_act_v1.config import PRESETS, HRMACTv1Config
from hrm_ray.models.hrm_act_v1.losses import (
    ACTLossHead,
    reduce_metrics,
    softmax_cross_entropy,
    stablemax_cross_entropy,
)
from hrm_ray.models.hrm_act_v1.model import ACTCarry, HRMACTv1, InnerCarry
from hrm_ray.models.hrm_act_v1.puzzle_embedding import PuzzleEmbedding, puzzle_embeddings

__all__ = [
    "ACTCarry", "ACTLossHead", "HRMACTv1", "HRMACTv1Config", "InnerCarry", "PRESETS", "PuzzleEmbedding",
    "puzzle_embeddings", "reduce_metrics", "softmax_cross_entropy", "stablemax_cross_entropy",
]
