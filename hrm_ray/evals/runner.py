"""Evaluate a task: per-example predictions (what a worker computes, shard by shard) and per-metric
results with a 95% Wilson interval (what the driver sums)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import Tokenizer

from hrm_ray.evals.answers import extract_answer, same_answer
from hrm_ray.evals.scoring import Thinking, generate_texts, loglikelihoods
from hrm_ray.evals.tasks import CODE, MULTIPLE_CHOICE, Example, Task
from hrm_ray.models.lm import HRMLanguageModel

Z_95 = 1.959963984540054  # the two-sided 95% normal quantile
METRIC_FIELD = {"exact_match": "correct", "acc": "correct", "pass@1": "correct", "acc_norm": "correct_norm"}


@dataclass(frozen=True)
class MetricResult:
    task: str
    metric: str
    value: float  # a fraction
    low: float
    high: float
    count: int

    def line(self) -> str:
        """'gsm8k exact_match 12.3% [10.5, 14.3] (1,319)'"""
        return (f"{self.task} {self.metric} {100 * self.value:.1f}% "
                f"[{100 * self.low:.1f}, {100 * self.high:.1f}] ({self.count:,})")


def wilson_interval(successes: float, n: float, population: float | None = None,
                    z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion from `n` of `population` items drawn without replacement
    (finite-population corrected: the interval closes to the point when the whole population is seen);
    `population=None`: `n` draws from an unlimited population (no correction). No draws: (0, 0)."""
    if n <= 0:
        return 0.0, 0.0
    p = successes / n
    if population is None:
        fpc = 1.0
    else:
        fpc = max(0.0, (population - n) / (population - 1)) if population > 1 else 0.0
    zz = z * z * fpc
    denom = 1 + zz / n
    center = (p + zz / (2 * n)) / denom
    half = math.sqrt(zz * (p * (1 - p) / n + zz / (4 * n * n))) / denom
    return max(0.0, center - half), min(1.0, center + half)


def summarize(task: Task, predictions: Sequence[dict[str, Any]]) -> list[MetricResult]:
    out = []
    for metric in task.metrics:
        hits = sum(bool(p[METRIC_FIELD[metric]]) for p in predictions)
        low, high = wilson_interval(hits, len(predictions))
        out.append(MetricResult(task.name, metric, hits / max(1, len(predictions)), low, high, len(predictions)))
    return out


def predict(model: HRMLanguageModel, tokenizer: Tokenizer, task: Task, examples: Sequence[Example],
            how: Thinking = Thinking(), max_new_tokens: int = 64) -> list[dict[str, Any]]:
    """One prediction record per example: prompt, output, reference, correct (and reason, scores)."""
    if task.kind == MULTIPLE_CHOICE:
        return _choose(model, tokenizer, examples, how)
    outputs = generate_texts(model, tokenizer, [e.prompt for e in examples], max_new_tokens, task.stop, how)
    if task.kind == CODE:
        return _run_code(examples, outputs)
    records = []
    for example, output in zip(examples, outputs, strict=True):
        if task.compare == "exact":
            answer, correct = output.strip(), output.strip() == example.reference
        else:
            answer = extract_answer(output)
            correct = same_answer(example.reference, answer)
        records.append({"prompt": example.prompt, "output": output, "answer": answer,
                        "reference": example.reference, "correct": correct})
    return records


def _choose(model: HRMLanguageModel, tokenizer: Tokenizer, examples: Sequence[Example],
            how: Thinking) -> list[dict[str, Any]]:
    """acc: the choice of highest log-likelihood; acc_norm: per character of the choice (lm-eval's)."""
    requests = [(e.prompt, c) for e in examples for c in e.choices]
    scores = iter(loglikelihoods(model, tokenizer, requests, how))
    records = []
    for e in examples:
        logprobs = [next(scores)[0] for _ in e.choices]
        normed = [lp / max(1, len(c)) for lp, c in zip(logprobs, e.choices, strict=True)]
        best = max(range(len(logprobs)), key=logprobs.__getitem__)
        best_norm = max(range(len(normed)), key=normed.__getitem__)
        records.append({"prompt": e.prompt, "output": e.choices[best], "reference": e.reference,
                        "correct": best == e.gold, "correct_norm": best_norm == e.gold, "logprobs": logprobs})
    return records


def strip_fences(output: str) -> str:
    """The code of a reply that wraps it in a ```python fence (the whole reply otherwise)."""
    if "```" not in output:
        return output
    inside = output.split("```")[1]
    return inside.split("\n", 1)[1] if inside.startswith(("python", "py\n")) else inside


def _run_code(examples: Sequence[Example], outputs: Sequence[str]) -> list[dict[str, Any]]:
    """Each generated program against its example's tests, in sandboxed children (evals/sandbox.py)."""
    from hrm_ray.evals.sandbox import CodeSample, run_many

    results = run_many([CodeSample(strip_fences(out), list(e.tests), e.setup)
                        for e, out in zip(examples, outputs, strict=True)])
    return [{"prompt": e.prompt, "output": out, "reference": e.reference, "correct": bool(r.passed),
             "reason": r.reason} for e, out, r in zip(examples, outputs, results, strict=True)]
