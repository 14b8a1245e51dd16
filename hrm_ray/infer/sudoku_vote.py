"""Sudoku voting over augmented views: each test puzzle is solved in `views` symmetric copies (the puzzle
itself, then random digit relabellings, band/row and stack/column permutations and, for square boxes,
transpositions), each predicted grid is mapped back by the inverse symmetry, and identical grids vote.
Candidates rank by votes, then by mean q_halt logit (the halting head's confidence), as the ARC voting.
"""
from __future__ import annotations

import numpy as np
import torch

from hrm_ray.data.puzzles.format import PuzzleSplit, collate
from hrm_ray.data.puzzles.sudoku_symmetry import SudokuSymmetry, identity, infer_box, random_symmetry
from hrm_ray.errors import UserError
from hrm_ray.models.puzzle import ACTLossHead
from hrm_ray.train.puzzle_task import eval_rows, run_to_halt

BOX_SAMPLE = 64  # solution grids read to find the box shape


def vote(grids: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """The winning grid of [V, L] candidate grids: most votes, ties broken by the higher mean confidence."""
    tally: dict[bytes, list] = {}
    for grid, q in zip(grids, confidence, strict=True):
        entry = tally.setdefault(grid.tobytes(), [grid, 0, 0.0])
        entry[1] += 1
        entry[2] += float(q)
    return max(tally.values(), key=lambda e: (e[1], e[2] / e[1]))[0]


def dataset_box(split: PuzzleSplit) -> tuple[int, int]:
    """The box shape of a Sudoku split, read from its solutions; a UserError for any other puzzle."""
    labels = np.concatenate([np.asarray(s.labels[:BOX_SAMPLE]) for s in split.sets.values()])
    box = infer_box(labels)
    if box is None:
        raise UserError(f"--vote: {split.path} is not a Sudoku dataset (its labels are not n x n Sudoku "
                        f"solutions with r x c boxes); voting over augmentations needs one")
    return box


def view_symmetries(box: tuple[int, int], views: int, rng: np.random.Generator) -> list[SudokuSymmetry]:
    """The puzzle itself, then views - 1 random symmetries."""
    return [identity(box[0] * box[1]), *(random_symmetry(box, rng) for _ in range(views - 1))]


@torch.no_grad()
def predict_views(head: ACTLossHead, split: PuzzleSplit, symmetries: list[SudokuSymmetry], batch_size: int,
                  max_examples: int, seed: int, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every view of each evaluated puzzle run to halting: (grids [N, V, L] mapped back, q_halt [N, V],
    labels [N, L])."""
    meta = split.metadata
    inputs, labels, ids = [], [], []
    for name, examples in eval_rows(split, max_examples, seed):
        pset = split.sets[name]
        puzzles = np.searchsorted(pset.puzzle_indices, examples, side="right") - 1
        inputs.append(np.asarray(pset.inputs[examples]))
        labels.append(np.asarray(pset.labels[examples]))
        ids.append(np.asarray(pset.puzzle_identifiers[puzzles]))
    inputs, labels, ids = np.concatenate(inputs), np.concatenate(labels), np.concatenate(ids)
    grids = np.empty((len(inputs), len(symmetries), inputs.shape[1]), dtype=np.int64)
    q_halt = np.empty((len(inputs), len(symmetries)), dtype=np.float32)
    for v, sym in enumerate(symmetries):
        view_in, view_labels, back = sym.apply(inputs), sym.apply(labels), sym.inverse()
        for start in range(0, len(inputs), batch_size):
            rows = slice(start, start + batch_size)
            batch = {k: t.to(device) for k, t in collate(view_in[rows], view_labels[rows], ids[rows], meta).items()}
            _, _, outputs = run_to_halt(head, batch)
            grids[rows, v] = back.apply(outputs["logits"].argmax(-1).cpu().numpy())
            q_halt[rows, v] = outputs["q_halt_logits"].float().cpu().numpy()
    return grids, q_halt, labels


def sudoku_vote(head: ACTLossHead, split: PuzzleSplit, views: int, batch_size: int, max_examples: int = 0,
                seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """Exact accuracy of the voted answers over `views` views of each puzzle (`vote_exact_accuracy`)."""
    if views < 1:
        raise UserError(f"--vote: the number of views must be >= 1, got {views}")
    symmetries = view_symmetries(dataset_box(split), views, np.random.default_rng(seed))
    grids, q_halt, labels = predict_views(head, split, symmetries, batch_size, max_examples, seed, device)
    voted = np.stack([vote(g, q) for g, q in zip(grids, q_halt, strict=True)])
    return {"vote_exact_accuracy": float((voted == labels).all(-1).mean()), "vote_views": float(views),
            "vote_examples": float(len(labels))}
