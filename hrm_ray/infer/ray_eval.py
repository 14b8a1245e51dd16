"""Task evaluation sharded over a Ray Data actor pool: each actor loads the model once and predicts its
batches with the same batched greedy code as the in-process run, so the predictions are the same.

The pool is planned against the cluster like a training run (`train/resources.py`): an impossible request
(more GPUs or CPUs than the cluster has, at its autoscaler's maximum) fails at once with one line."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from hrm_ray.errors import UserError
from hrm_ray.evals.runner import predict
from hrm_ray.evals.scoring import Thinking
from hrm_ray.evals.tasks import Example, Task, get_task

ACTOR_CPUS = 1.0


class TaskPredictor:
    """A Ray Data callable class: the model loaded once per actor; a batch of (task, example) rows in,
    their prediction records (JSON) out, in order."""

    def __init__(self, model_dir: str, how: dict[str, Any], max_new_tokens: int, use_gpu: bool) -> None:
        import torch

        from hrm_ray.infer.loading import load_model, resolve_checkpoint

        torch.set_num_threads(max(1, int(ACTOR_CPUS)))
        loaded = load_model(resolve_checkpoint(model_dir), "cuda" if use_gpu else "cpu")
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.how, self.max_new_tokens = Thinking(**how), max_new_tokens

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        tasks, examples = list(batch["task"]), [example_from_json(s) for s in batch["example"]]
        records: list[str | None] = [None] * len(tasks)
        for name in dict.fromkeys(tasks):  # each task's rows of this batch, together
            rows = [i for i, t in enumerate(tasks) if t == name]
            predicted = predict(self.model, self.tokenizer, get_task(name), [examples[i] for i in rows], self.how,
                                self.max_new_tokens)
            for i, record in zip(rows, predicted, strict=True):
                records[i] = json.dumps(record)
        return {"task": tasks, "index": list(batch["index"]), "prediction": records}


def example_from_json(text: str) -> Example:
    fields = json.loads(text)
    return Example(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def plan_pool(num_workers: int, use_gpu: bool) -> None:
    """Hold the pool (num_workers actors of ACTOR_CPUS CPUs and a GPU each when use_gpu) against the cluster."""
    from hrm_ray.train.resources import Need, cluster_now, plan_run, shortfall

    if num_workers < 1:
        raise UserError(f"--num_workers must be >= 1 for Ray evaluation, got {num_workers}")
    cluster, need = cluster_now(), Need(num_workers, ACTOR_CPUS, float(use_gpu))
    try:
        plan_run(cluster, need)
    except UserError:
        raise UserError("evaluation pool " + shortfall(cluster, need)) from None


def predict_with_ray(model_dir: str, suite: Sequence[tuple[Task, list[Example]]], how: Thinking,
                     max_new_tokens: int, num_workers: int, use_gpu: bool = False) -> list[list[dict[str, Any]]]:
    """Each task's prediction records, in example order, computed by `num_workers` actors. `model_dir`: the
    model directory where every node can read it (local, or s3:// / gs:// for a cluster)."""
    import ray.data

    from hrm_ray.ray_env import ensure_ray

    ensure_ray()
    plan_pool(num_workers, use_gpu)
    rows = [{"task": task.name, "index": i, "example": json.dumps(dataclasses.asdict(e))}
            for task, examples in suite for i, e in enumerate(examples)]
    blocks = max(1, min(len(rows), num_workers * 4))
    done = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        TaskPredictor, fn_constructor_kwargs={"model_dir": str(model_dir), "how": dataclasses.asdict(how),
                                              "max_new_tokens": max_new_tokens, "use_gpu": use_gpu},
        batch_size=how.batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=num_workers),
        num_cpus=ACTOR_CPUS, num_gpus=1 if use_gpu else 0).take_all()
    by_task: dict[str, list[tuple[int, dict[str, Any]]]] = {task.name: [] for task, _ in suite}
    for row in done:
        by_task[str(row["task"])].append((int(row["index"]), json.loads(row["prediction"])))
    return [[record for _, record in sorted(by_task[task.name], key=lambda pair: pair[0])] for task, _ in suite]
