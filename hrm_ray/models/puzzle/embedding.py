"""The sparse per-puzzle embedding of the puzzle families."""
from __future__ import annotations

import torch
from torch import nn

from hrm_ray.models.layers import trunc_normal_


class PuzzleEmbedding(nn.Module):
    """Per-puzzle embedding trained sparsely by sign-SGD (hrm_ray.train.sign_sgd).

    The table is a persistent buffer, not a parameter: dense optimisers and DDP never see it.
    In a training forward with grad enabled, the looked-up rows become a fresh leaf tensor
    (`local`) whose gradient, with `local_ids`, is what the sign-SGD step applies.
    """

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.0) -> None:
        super().__init__()
        weights = torch.zeros(num_embeddings, dim)
        if init_std > 0:
            trunc_normal_(weights, init_std)
        self.register_buffer("weights", weights, persistent=True)
        self.local: torch.Tensor | None = None
        self.local_ids: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights[ids]
        if not (self.training and torch.is_grad_enabled()):
            return rows
        self.local = rows.detach().requires_grad_(True)
        self.local_ids = ids.detach()
        return self.local


def puzzle_embeddings(module: nn.Module) -> list[PuzzleEmbedding]:
    """Every PuzzleEmbedding inside `module` (works through DDP and loss wrappers)."""
    return [m for m in module.modules() if isinstance(m, PuzzleEmbedding)]
