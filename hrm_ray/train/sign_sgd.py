"""Sign-SGD for the sparse puzzle embedding, with decoupled weight decay.

Each step touches only the rows the batch used: w <- w * (1 - lr * wd) - lr * sign(sum of row grads).
With a sparse gradient Adam behaves like sign-SGD, and this needs no per-row optimizer state.
Under torch.distributed the (ids, row gradients) of every worker are all-gathered first, so all
workers apply the same update and their tables stay identical.

Mixed precision: the update depends on the gradient's sign only, so fp16's loss scale needs no undoing
(`scale_invariant`: the loop steps this optimizer outside the GradScaler, which could not see these
gradients: they live on the looked-up rows, not on a parameter). A non-finite row gradient (an fp16
overflow, a NaN) skips the whole update, as GradScaler skips a step, without a host sync.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch.optim import Optimizer

from hrm_ray.models.puzzle import PuzzleEmbedding


def gather_rows(ids: torch.Tensor, grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gather ids [N] and row gradients [N, D] from every worker (a no-op without a process group).

    Every worker must contribute the same N (the puzzle sampler yields full, equal local batches).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return ids, grads
    world = dist.get_world_size()
    all_ids = [torch.empty_like(ids) for _ in range(world)]
    all_grads = [torch.empty_like(grads) for _ in range(world)]
    dist.all_gather(all_ids, ids.contiguous())
    dist.all_gather(all_grads, grads.contiguous())
    return torch.cat(all_ids), torch.cat(all_grads)


class SparseEmbeddingSignSGD(Optimizer):
    """Optimizer over PuzzleEmbedding modules; lr and weight_decay live in param_groups as usual.

    Use it with the `puzzle_emb_lr` / `puzzle_emb_weight_decay` settings, scheduled like any
    optimizer by writing param_group["lr"].
    """

    scale_invariant = True   # sign(c * g) == sign(g): the loop skips GradScaler.unscale_/step for it

    def __init__(self, embeddings: list[PuzzleEmbedding], lr: float = 1e-2, weight_decay: float = 0.1) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"puzzle embedding lr ({lr}) and weight_decay ({weight_decay}) must be >= 0")
        if not embeddings:
            raise ValueError("SparseEmbeddingSignSGD needs at least one PuzzleEmbedding (is puzzle_emb_ndim 0?)")
        self.embeddings = list(embeddings)
        super().__init__([e.weights for e in self.embeddings], dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        group = self.param_groups[0]
        for emb in self.embeddings:
            if emb.local is None or emb.local.grad is None:
                continue  # no training forward since the last step
            ids, grads = gather_rows(emb.local_ids, emb.local.grad)
            apply_sign_sgd(emb.weights, ids, grads, lr=group["lr"], weight_decay=group["weight_decay"])
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        for emb in self.embeddings:
            emb.local = None
            emb.local_ids = None


def group_ids(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(order, group, rows): a stable sort of ids [N], each sorted id's group index, and each group's id at
    its index [N] (indices past the last group hold ids[order][0]). Like unique(), but with sizes fixed at N
    there is no host sync; within a group the original order is kept."""
    order = ids.argsort(stable=True)
    sorted_ids = ids[order]
    new_group = torch.ones_like(sorted_ids, dtype=torch.bool)
    new_group[1:] = sorted_ids[1:] != sorted_ids[:-1]
    group = new_group.cumsum(0) - 1
    rows = sorted_ids[:1].expand(len(ids)).clone().scatter_(0, group, sorted_ids)
    return order, group, rows


def apply_sign_sgd(weights: torch.Tensor, ids: torch.Tensor, grads: torch.Tensor, lr: float, weight_decay: float
                   ) -> None:
    """Sum the gradients of repeated ids, then update each touched row once; nothing changes when any
    gradient is non-finite. Unused group slots rewrite the first row with its own new value."""
    if ids.numel() == 0:
        return
    order, group, rows = group_ids(ids)
    summed = torch.zeros(len(ids), grads.shape[1], dtype=grads.dtype, device=grads.device)
    summed.index_add_(0, group, grads[order])
    used = (torch.arange(len(ids), device=ids.device) <= group[-1]).unsqueeze(-1)
    old = weights[rows]
    updated = old * (1.0 - lr * weight_decay) - lr * torch.sign(summed).to(old.dtype)
    new = torch.where(torch.isfinite(summed).all(), updated, old)
    weights[rows] = torch.where(used, new, new[:1])
