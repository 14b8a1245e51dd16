"""`hrm-ray eval`: validation loss / perplexity of a trained run on a dataset, and exact-match accuracy
by greedy generation on held-out arithmetic problems (the synthetic task's `test` split, never trained on).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from hrm_ray.config import SYNTHETIC, Config
from hrm_ray.infer.generate import complete
from hrm_ray.infer.loading import LoadedModel
from hrm_ray.train.checkpoint import META_FILE
from hrm_ray.train.lm_task import LanguageModelTask
from hrm_ray.train.loop import evaluate as evaluate_batches
from hrm_ray.train.task import WorkerContext


@dataclass
class EvalResult:
    loss: float
    perplexity: float
    tokens: int
    exact_match: float | None = None
    samples: int = 0
    examples: list[tuple[str, str, str]] | None = None  # (prompt, expected, generated)

    def lines(self) -> list[str]:
        out = [f"loss {self.loss:.4f} | perplexity {self.perplexity:.3f} | tokens {self.tokens:,}"]
        if self.exact_match is not None:
            out.append(f"exact match {100 * self.exact_match:.2f}% on {self.samples:,} held-out problems")
        return out


def trained_step(loaded: LoadedModel) -> int:
    """The step the weights come from (sets the gate scale the model was trained to)."""
    try:
        return int(json.loads((loaded.path / META_FILE).read_text())["step"])
    except (OSError, KeyError, ValueError):
        return loaded.config.train.steps


def exact_match(loaded: LoadedModel, pairs: list[tuple[str, str]], batch_size: int = 256,
                max_new_tokens: int = 8) -> tuple[float, list[tuple[str, str, str]]]:
    """Share of prompts whose greedy completion equals the answer exactly."""
    hits, examples = 0, []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        done = complete(loaded.model, loaded.tokenizer, [p for p, _ in chunk], max_new_tokens,
                        max_prompt_len=loaded.config.data.max_seq_len)
        for (prompt, answer), c in zip(chunk, done, strict=True):
            hits += c.text.strip() == answer
            if len(examples) < 5:
                examples.append((prompt, answer, c.text))
    return hits / max(1, len(pairs)), examples


def evaluate_model(loaded: LoadedModel, dataset: str = SYNTHETIC, max_samples: int = 0,
                   batch_size: int = 64) -> EvalResult:
    """Loss/perplexity on `dataset` (synthetic: the held-out test split; prepared: its val split)."""
    cfg: Config = loaded.config
    cfg.data.dataset = dataset
    cfg.data.max_val_samples = max_samples
    cfg.train.eval_batch_size = batch_size
    if dataset == SYNTHETIC:  # every distinct held-out problem, unless capped by max_samples
        cfg.data.synthetic_val_size = 2 * (cfg.data.synthetic_max_operand + 1) ** 2
    task = LanguageModelTask(cfg, val_split="test")
    device = next(loaded.model.parameters()).device
    ctx = WorkerContext(device=device)
    if dataset == SYNTHETIC:
        pairs = task.synthetic_pairs("val")
        batches = task.val_batches(ctx)
    else:
        from hrm_ray.ray_env import ensure_ray

        if task.needs_ray_data():  # a mixture (or a run with workers): Ray Data reads it; else its files directly
            ensure_ray()
            ctx.shards["val"] = task.ray_datasets()["val"]
        batches = task.val_batches(ctx)
    with torch.no_grad():
        metrics = evaluate_batches(loaded.model, task, batches, trained_step(loaded), device, None)
    result = EvalResult(metrics["loss"], metrics["perplexity"], int(metrics["tokens"]))
    if dataset == SYNTHETIC:
        result.exact_match, result.examples = exact_match(loaded, pairs)
        result.samples = len(pairs)
    return result

