"""Evaluate several tasks on one model: results with predictions (`hrm-ray eval --tasks`) or flat
fractions (`task_metrics`, what training logs: {"gsm8k/exact_match": 0.12, ...})."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tokenizers
import torch

from hrm_ray.evals.runner import MetricResult, predict, summarize
from hrm_ray.evals.scoring import Thinking
from hrm_ray.evals.tasks import Example, Task, get_task, load_examples, parse_task_specs


@dataclass
class TaskResult:
    task: Task
    predictions: list[dict[str, Any]]
    metrics: list[MetricResult]


def load_suite(specs: Sequence[str], task_files: Mapping[str, str] | None = None, limit: int = 0,
               options: Mapping[str, Any] | None = None) -> list[tuple[Task, list[Example]]]:
    """Every named task with its examples, all loaded (and checked) before any model runs."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    chosen = parse_task_specs(specs, task_files)
    return [(get_task(name), load_examples(get_task(name), path, limit, options)) for name, path in chosen.items()]


def evaluate_suite(model: torch.nn.Module, tokenizer: tokenizers.Tokenizer,
                   suite: Sequence[tuple[Task, list[Example]]], how: Thinking = Thinking(),
                   max_new_tokens: int = 64) -> list[TaskResult]:
    results = []
    for task, examples in suite:
        predictions = predict(model, tokenizer, task, examples, how, max_new_tokens)
        results.append(TaskResult(task, predictions, summarize(task, predictions)))
    return results


def flat_metrics(results: Sequence[TaskResult]) -> dict[str, float]:
    return {f"{m.task}/{m.metric}": m.value for r in results for m in r.metrics}


def task_metrics(model: torch.nn.Module, tokenizer: tokenizers.Tokenizer, tasks: Sequence[str], *,
                 task_files: Mapping[str, str] | None = None, limit: int = 0, gate_scale: float = 1.0,
                 max_seq_len: int = 256, batch_size: int = 32, max_new_tokens: int = 64) -> dict[str, float]:
    """Flat task metrics (fractions) of `model`: {"gsm8k/exact_match": 0.12, "arc_easy/acc": 0.3, ...}.
    `tasks` entries are NAME or NAME=PATH (a local JSONL/Parquet file). The model's train/eval mode is kept."""
    how = Thinking(gate_scale=gate_scale, max_seq_len=max_seq_len, batch_size=batch_size)
    return suite_metrics(model, tokenizer, load_suite(tasks, task_files, limit), how, max_new_tokens)


def suite_metrics(model: torch.nn.Module, tokenizer: tokenizers.Tokenizer,
                  suite: Sequence[tuple[Task, list[Example]]], how: Thinking, max_new_tokens: int) -> dict[str, float]:
    """`task_metrics` of a suite loaded once (`load_suite`), e.g. by a training run that evaluates it often."""
    was_training = model.training
    try:
        return flat_metrics(evaluate_suite(model, tokenizer, suite, how, max_new_tokens))
    finally:
        model.train(was_training)
