"""`hrm-ray eval --tasks`: task metrics of a trained run, with its predictions written beside it.

    <model_dir>/../evals/<UTC time>-<tasks>/predictions-<task>.jsonl   one record per example
                                            summary.json               settings and every metric

The output directory appears whole or not at all (`atomic.staged_dir`)."""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hrm_ray.atomic import staged_dir
from hrm_ray.errors import UserError
from hrm_ray.evals.runner import summarize
from hrm_ray.evals.scoring import Thinking
from hrm_ray.evals.suite import TaskResult, evaluate_suite, load_suite
from hrm_ray.infer.loading import LoadedModel


@dataclass(frozen=True)
class TaskRequest:
    tasks: tuple[str, ...]
    task_files: Mapping[str, str]
    limit: int = 0
    max_new_tokens: int = 64
    num_workers: int = 0
    use_gpu: bool = False


def parse_task_files(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--task_file: expected NAME=PATH, got {value!r}")
        out[name] = path
    return out


def default_output_dir(model_dir: Path, tasks: Sequence[str]) -> Path:
    names = "-".join(t.partition("=")[0] for t in tasks)[:80]
    return model_dir.absolute().parent / "evals" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{names}"


def evaluate_tasks(loaded: LoadedModel, request: TaskRequest, how: Thinking,
                   model_location: str = "") -> list[TaskResult]:
    """Every task loaded and checked first, then evaluated in-process or on `num_workers` Ray actors."""
    if request.limit < 0 or request.max_new_tokens <= 0:
        raise UserError("--limit must be >= 0 and --max_new_tokens > 0")
    suite = load_suite(request.tasks, request.task_files, request.limit,
                       {"synthetic_max_operand": loaded.config.data.synthetic_max_operand,
                        "seed": loaded.config.train.seed})
    if request.num_workers <= 0:
        return evaluate_suite(loaded.model, loaded.tokenizer, suite, how, request.max_new_tokens)
    from hrm_ray.infer.ray_eval import predict_with_ray

    shards = predict_with_ray(model_location or str(loaded.path), suite, how, request.max_new_tokens,
                              request.num_workers, request.use_gpu)
    return [TaskResult(task, predictions, summarize(task, predictions))
            for (task, _), predictions in zip(suite, shards, strict=True)]


def write_results(out_dir: Path, results: Sequence[TaskResult], model_dir: Path, how: Thinking,
                  request: TaskRequest) -> None:
    """predictions-<task>.jsonl and summary.json, the directory swapped into place when complete."""
    summary = {"model": str(model_dir), "thinking": asdict(how), "limit": request.limit,
               "max_new_tokens": request.max_new_tokens, "num_workers": request.num_workers,
               "tasks": {r.task.name: {m.metric: {"value": m.value, "low": m.low, "high": m.high, "count": m.count}
                                       for m in r.metrics} for r in results},
               "lines": [m.line() for r in results for m in r.metrics]}
    with staged_dir(out_dir) as tmp:
        for result in results:
            with open(tmp / f"predictions-{result.task.name}.jsonl", "w", encoding="utf-8") as handle:
                for record in result.predictions:
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
