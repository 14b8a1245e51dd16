"""What the puzzle families share: their config base (`PuzzleModelConfig`), the input side and heads
(`PuzzleInputs`), the outer model's interface (`PuzzleModel`), the ACT carry and exploration, the sparse
puzzle embedding, and the loss head with its metrics (`ACTLossHead`, `reduce_metrics`). The trainer, the
evaluation and the families themselves (hrm_act_v1, transformer_baseline, trm) import it from here."""
from hrm_ray.models.puzzle.act import ACTCarry, Batch, explore, fresh_carry, halting, take_new_examples
from hrm_ray.models.puzzle.config import PuzzleModelConfig
from hrm_ray.models.puzzle.embedding import PuzzleEmbedding, puzzle_embeddings
from hrm_ray.models.puzzle.losses import (
    COUNT_METRICS,
    IGNORE_LABEL_ID,
    ACTLossHead,
    log_stablemax,
    reduce_metrics,
    softmax_cross_entropy,
    stablemax_cross_entropy,
)
from hrm_ray.models.puzzle.model import PuzzleInputs, PuzzleModel, paper_block

__all__ = [
    "ACTCarry", "ACTLossHead", "Batch", "COUNT_METRICS", "IGNORE_LABEL_ID", "PuzzleEmbedding", "PuzzleInputs",
    "PuzzleModel", "PuzzleModelConfig", "explore", "fresh_carry", "halting", "log_stablemax", "paper_block", "puzzle_embeddings",
    "reduce_metrics", "softmax_cross_entropy", "stablemax_cross_entropy", "take_new_examples",
]
