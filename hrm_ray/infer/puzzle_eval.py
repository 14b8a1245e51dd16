"""`hrm-ray eval` for puzzle runs: exact accuracy on a test split, and for ARC the paper's voting.

ARC voting: every augmented copy of an evaluation task predicts each test output; the prediction is
decoded to a grid, the copy's augmentation is undone (augmentations.json: dihedral transform and
colour permutation), and identical grids vote. Candidates rank by votes, then by mean q_halt logit
(the model's confidence). pass@k: one of the top k candidates equals the true output; a task scores
the share of its test outputs that pass, and pass@k is the mean over tasks. Sudoku voting over symmetric
views: hrm_ray.infer.sudoku_vote.

Test-time depth: `depth` overrides the model's halt_max_steps (improvement steps, each run to the end at
evaluation) and its recursion counts (h_cycles, l_cycles) for this evaluation only; the weights are the
trained ones and the run's config is not touched.
"""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrm_ray.config import Config, from_dict, load_yaml
from hrm_ray.data.puzzles.format import PuzzleSplit
from hrm_ray.errors import UserError
from hrm_ray.infer.loading import CONFIG_FILE, read_state_dict
from hrm_ray.models.puzzle import COUNT_METRICS, ACTLossHead
from hrm_ray.train.checkpoint import STATE_FILE, load_training_state
from hrm_ray.train.puzzle_task import (
    PuzzleTask,
    build_puzzle_model,
    eval_rows,
    eval_subset_batches,
    load_dataset_split,
    resolve_model,
    run_to_halt,
)
from hrm_ray.train.task_registry import task_class

AUGMENTATIONS_FILE = "augmentations.json"
DEPTH_FIELDS = ("halt_max_steps", "h_cycles", "l_cycles")  # model fields an evaluation may deepen


@dataclasses.dataclass
class Predictions:
    """Per evaluated example: its set, index, predicted tokens and q_halt logit."""
    sets: list[str]
    examples: np.ndarray
    tokens: np.ndarray       # [N, seq_len]
    q_halt: np.ndarray       # [N]


def model_config(directory: Path) -> Config:
    """The run's config: config.yaml beside the weights (best-model/), else the checkpoint's own copy."""
    if (directory / CONFIG_FILE).is_file():
        return load_yaml(directory / CONFIG_FILE)
    if (directory / STATE_FILE).is_file():
        return from_dict(load_training_state(directory)["config"])
    raise UserError(f"{directory}: no {CONFIG_FILE} and no {STATE_FILE} to read the run's config from")


def is_puzzle_model(directory: Path) -> bool:
    """Whether the run's model family is trained by the puzzle task (or one built on it)."""
    return issubclass(task_class(model_config(directory)), PuzzleTask)


def puzzle_weights(directory: Path) -> dict[str, torch.Tensor]:
    """best-model/ weights as saved (EMA ones when the run used EMA); a checkpoint's EMA shadow when it has one."""
    weights = read_state_dict(directory)
    if (directory / STATE_FILE).is_file():
        ema = load_training_state(directory).get("task", {}).get("ema")
        if ema:
            weights = {**weights, **{k: v.to(weights[k].dtype) for k, v in ema["shadow"].items()}}
    return weights


def with_depth(model: Any, depth: Mapping[str, int] | None) -> Any:
    """The model config with the evaluation's depth overrides (DEPTH_FIELDS) applied."""
    for key, value in (depth or {}).items():
        if key not in DEPTH_FIELDS:
            raise UserError(f"--{key}: not a depth setting of an evaluation ({', '.join(DEPTH_FIELDS)})")
        if not hasattr(model, key):
            raise UserError(f"--{key}: model '{model.name}' has no {key}")
        if value < 1:
            raise UserError(f"--{key}: must be >= 1, got {value}")
    return dataclasses.replace(model, **(depth or {}))


def load_puzzle_model(directory: Path, data_path: str, device: str = "cpu", depth: Mapping[str, int] | None = None
                      ) -> tuple[ACTLossHead, Config, PuzzleSplit]:
    """The trained model of a run (its EMA weights where it kept them), at the depth `depth` overrides."""
    cfg = model_config(directory)
    train_split = load_dataset_split(data_path, "train")
    head = build_puzzle_model(resolve_model(with_depth(cfg.model, depth), train_split.metadata))
    try:
        head.load_state_dict(puzzle_weights(directory))
    except RuntimeError as exc:
        first = " ".join(str(exc).strip().splitlines()[:3])
        raise UserError(f"{directory}: weights do not match the config's model: {first}") from exc
    return head.to(device).eval(), cfg, train_split


@torch.no_grad()
def predict(head: ACTLossHead, split: PuzzleSplit, batch_size: int, max_examples: int = 0, seed: int = 0,
            device: str = "cpu") -> tuple[dict[str, float], Predictions]:
    """Run every example (or a random `max_examples`) to halting: metric means and the predictions."""
    sums: dict[str, float] = defaultdict(float)
    sets, examples, tokens, q_halt = [], [], [], []
    for name, ex, batch in eval_subset_batches(split, eval_rows(split, max_examples, seed), batch_size, 0, 1):
        batch = {k: v.to(device) for k, v in batch.items()}
        _, metrics, outputs = run_to_halt(head, batch)
        for key in (*COUNT_METRICS, "count", "lm_loss"):
            sums[key] += float(metrics[key])
        n = len(ex)
        sets += [name] * n
        examples.append(ex)
        tokens.append(outputs["logits"][:n].argmax(-1).to(torch.uint8).cpu().numpy())
        q_halt.append(outputs["q_halt_logits"][:n].float().cpu().numpy())
    count = max(sums["count"], 1.0)
    result = {k: sums[k] / count for k in COUNT_METRICS}
    result.update(loss=sums["lm_loss"] / count, examples=sums["count"])
    return result, Predictions(sets, np.concatenate(examples), np.concatenate(tokens), np.concatenate(q_halt))


def arc_vote(dataset_dir: str | Path, split: PuzzleSplit, preds: Predictions, ks: tuple[int, ...] = (1, 2)
             ) -> dict[str, float]:
    """pass@k over the original tasks after undoing each augmented copy's transform and voting."""
    from hrm_ray.data.puzzles.arc import decode_grid, undo_augmentation

    path = Path(dataset_dir) / AUGMENTATIONS_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found (ARC voting needs the augmentations the builder recorded)")
    augmentations: list[dict[str, Any] | None] = json.loads(path.read_text())

    truth: dict[tuple[str, int], np.ndarray] = {}
    votes: dict[tuple[str, int], dict[bytes, list]] = defaultdict(dict)
    for set_name, example, tokens, q in zip(preds.sets, preds.examples, preds.tokens, preds.q_halt, strict=True):
        pset = split.sets[set_name]
        puzzle = int(np.searchsorted(pset.puzzle_indices, example, side="right") - 1)
        identifier = int(pset.puzzle_identifiers[puzzle])
        aug = augmentations[identifier] if identifier < len(augmentations) else None
        if aug is None:
            raise UserError(f"{path}: no augmentation recorded for puzzle identifier {identifier}")
        key = (aug["task"], int(example - pset.puzzle_indices[puzzle]))
        cmap = np.asarray(aug["colour_map"], dtype=np.uint8)

        def undo(grid_tokens: np.ndarray, tid: int = aug["dihedral"], cmap: np.ndarray = cmap) -> np.ndarray:
            return undo_augmentation(decode_grid(grid_tokens), tid, cmap)

        truth.setdefault(key, undo(np.asarray(pset.labels[example])))
        grid = undo(tokens)
        digest = grid.shape[0].to_bytes(1, "little") + grid.shape[1].to_bytes(1, "little") + grid.tobytes()
        entry = votes[key].setdefault(digest, [grid, 0, 0.0])
        entry[1] += 1
        entry[2] += float(q)

    per_task: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for key, candidates in votes.items():
        ranked = sorted(candidates.values(), key=lambda c: (c[1], c[2] / c[1]), reverse=True)
        expected = truth[key]
        hits = [c[0].shape == expected.shape and bool(np.array_equal(c[0], expected)) for c in ranked]
        for k in ks:
            per_task[key[0]][k].append(float(any(hits[:k])))
    out = {f"pass@{k}": float(np.mean([np.mean(scores[k]) for scores in per_task.values()])) for k in ks}
    out["tasks"] = float(len(per_task))
    return out


def evaluate_puzzle_run(directory: Path, data_path: str = "", split: str = "test", batch_size: int = 256,
                        max_examples: int = 0, device: str = "cpu", depth: Mapping[str, int] | None = None,
                        vote: int = 0) -> dict[str, float]:
    """Metrics of a trained puzzle model on `split` of its dataset (or `data_path`), at the trained depth or
    the one `depth` sets; ARC datasets (with augmentations.json) add pass@1 / pass@2 after voting, and
    `vote` > 0 adds the exact accuracy of Sudoku answers voted over that many symmetric views."""
    from hrm_ray.infer.sudoku_vote import sudoku_vote

    cfg = model_config(directory)
    data_path = data_path or cfg.data.dataset
    head, cfg, _ = load_puzzle_model(directory, data_path, device, depth)
    test = load_dataset_split(data_path, split)
    metrics, preds = predict(head, test, batch_size, max_examples, cfg.train.seed, device)
    if (Path(data_path) / AUGMENTATIONS_FILE).is_file():
        metrics.update(arc_vote(data_path, test, preds))
    if vote:
        metrics.update(sudoku_vote(head, test, vote, batch_size, max_examples, cfg.train.seed, device))
    return metrics


def format_metrics(metrics: dict[str, float]) -> list[str]:
    lines = [f"exact accuracy {100 * metrics['exact_accuracy']:.2f}% | token accuracy {100 * metrics['accuracy']:.2f}% "
             f"| q_halt accuracy {100 * metrics['q_halt_accuracy']:.2f}% | steps {metrics['steps']:.2f} "
             f"| loss {metrics['loss']:.4f} | {int(metrics['examples']):,} examples"]
    if "pass@1" in metrics:
        lines.append(f"ARC voting over augmentations: pass@1 {100 * metrics['pass@1']:.2f}% | "
                     f"pass@2 {100 * metrics['pass@2']:.2f}% on {int(metrics['tasks'])} tasks")
    if "vote_exact_accuracy" in metrics:
        lines.append(f"Sudoku voting over {int(metrics['vote_views'])} views: exact accuracy "
                     f"{100 * metrics['vote_exact_accuracy']:.2f}% on {int(metrics['vote_examples']):,} puzzles")
    return lines
