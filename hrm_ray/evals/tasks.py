"""The task registry, as data: each task's kind, prompt, reference, metrics, stop sequences and loader.

A task reads a local JSONL/Parquet file (`--task_file NAME=PATH`) in its raw schema or in the
prompt/response format `data build-reasoning` writes; without one it loads its hub dataset through
`datasets`, or (the generated tasks) draws its held-out split.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrm_ray.data import reasoning
from hrm_ray.data.records import iter_records
from hrm_ray.errors import UserError
from hrm_ray.evals.answers import final_answer, gsm8k_reference

GENERATE, MULTIPLE_CHOICE, CODE = "generate", "multiple_choice", "code"


@dataclass(frozen=True)
class Example:
    prompt: str
    reference: str  # the answer (generate), the correct choice's text (multiple choice), the code (code)
    choices: tuple[str, ...] = ()  # multiple choice: each choice as the continuation scored after the prompt
    gold: int = -1  # multiple choice: index of the correct choice
    tests: tuple[str, ...] = ()  # code: assert statements
    setup: str = ""  # code: run before the tests


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    metrics: tuple[str, ...]
    from_row: Callable[[dict[str, Any]], Example]  # KeyError(field) for a missing field
    hub: tuple[str, str | None, str] | None = None  # (dataset id, subset, split)
    generated: Callable[[int, Mapping[str, Any]], list[tuple[str, str]]] | None = None
    stop: tuple[str, ...] = ()
    compare: str = "number"  # generate: "number" (final answers by value) or "exact" (the whole output)
    description: str = field(default="", compare=False)


def _need(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    if value is None:
        raise KeyError(key)
    return value


def _as_list(value: Any) -> list:
    return list(value.tolist() if hasattr(value, "tolist") else value)


def gsm8k_example(row: dict[str, Any]) -> Example:
    """Raw GSM8K (question/answer) or build-reasoning (prompt/response) rows."""
    if "prompt" in row and "question" not in row:
        return reasoning_example(row)
    prompt, answer = reasoning.format_gsm8k({"question": _need(row, "question"), "answer": _need(row, "answer")})
    try:
        return Example(prompt, gsm8k_reference(answer))
    except ValueError:
        raise KeyError("answer (its '#### n' line)") from None


def reasoning_example(row: dict[str, Any]) -> Example:
    response = str(_need(row, "response"))
    return Example(str(_need(row, "prompt")).strip(), final_answer(response))


def pair_example(row: dict[str, Any]) -> Example:
    return Example(str(_need(row, "prompt")), str(_need(row, "response")).strip())


def arc_example(row: dict[str, Any]) -> Example:
    """ai2_arc rows: each choice scored as build-reasoning writes the answer, 'Answer: B. text'."""
    choices = _need(row, "choices")
    texts, labels = _as_list(_need(choices, "text")), [str(x) for x in _as_list(_need(choices, "label"))]
    key = str(_need(row, "answerKey"))
    if key not in labels:
        raise KeyError(f"answerKey ({key!r} is not one of the labels {labels})")
    prompt, _ = reasoning.format_arc(row)
    continuations = tuple(f"Answer: {label}. {text}" for label, text in zip(labels, texts, strict=True))
    gold = labels.index(key)
    return Example(prompt, continuations[gold], continuations, gold)


def mbpp_example(row: dict[str, Any]) -> Example:
    if "prompt" in row and "text" not in row:
        raise KeyError("text (MBPP rows: text, code, test_list)")
    prompt, code = reasoning.format_mbpp(row)
    setup = str(row.get("test_setup_code") or "")
    return Example(prompt, code, tests=tuple(_as_list(row["test_list"])), setup=setup)


def arithmetic_pairs(limit: int, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every distinct held-out problem of the synthetic arithmetic (the one `hrm-ray eval` scores)."""
    from hrm_ray.data.synthetic import arithmetic_pairs as draw

    top = int(options.get("synthetic_max_operand", 99))
    pairs = list(dict.fromkeys(draw("test", 2 * (top + 1) ** 2, top, 0)))
    return pairs[:limit] if limit else pairs


def _reasoning_task_pairs(task: str) -> Callable[[int, Mapping[str, Any]], list[tuple[str, str]]]:
    def draw(limit: int, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        from hrm_ray.data.reasoning_tasks import task_pairs

        return task_pairs(task, {"test": limit or 200}, seed=int(options.get("seed", 0)))["test"]
    return draw


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("gsm8k", GENERATE, ("exact_match",), gsm8k_example, hub=("openai/gsm8k", "main", "test"),
         description="grade-school math: the final number after '####'"),
    Task("arc_easy", MULTIPLE_CHOICE, ("acc", "acc_norm"), arc_example,
         hub=("allenai/ai2_arc", "ARC-Easy", "test")),
    Task("arc_challenge", MULTIPLE_CHOICE, ("acc", "acc_norm"), arc_example,
         hub=("allenai/ai2_arc", "ARC-Challenge", "test")),
    Task("mbpp", CODE, ("pass@1",), mbpp_example, hub=("google-research-datasets/mbpp", "full", "test")),
    Task("reasoning", GENERATE, ("exact_match",), reasoning_example,
         description="a `data build-reasoning` file: the response's final answer"),
    Task("arithmetic", GENERATE, ("exact_match",), pair_example, generated=arithmetic_pairs, compare="exact",
         description="the synthetic arithmetic's held-out problems"),
    *[Task(name, GENERATE, ("exact_match",), pair_example, generated=_reasoning_task_pairs(name), compare="exact")
      for name in ("sudoku6", "arith", "graph")],
]}


def get_task(name: str) -> Task:
    if name not in TASKS:
        close = difflib.get_close_matches(name, list(TASKS), n=1, cutoff=0.4)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(TASKS)})"
        raise UserError(f"--tasks: unknown task '{name}'{hint}")
    return TASKS[name]


def parse_task_specs(specs: Iterable[str], task_files: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """'NAME' or 'NAME=PATH' entries (and --task_file NAME=PATH) -> {name: path or None}, names checked."""
    chosen: dict[str, str | None] = {}
    for spec in specs:
        name, _, path = spec.strip().partition("=")
        if name:
            get_task(name)
            chosen[name] = path or chosen.get(name)
    for name, path in (task_files or {}).items():
        if name not in chosen:
            raise UserError(f"--task_file {name}={path}: '{name}' is not among --tasks ({', '.join(chosen)})")
        chosen[name] = path
    if not chosen:
        raise UserError("--tasks: name at least one task")
    return chosen


def load_examples(task: Task, path: str | None, limit: int = 0,
                  options: Mapping[str, Any] | None = None) -> list[Example]:
    """The task's examples: from `path`, else generated, else from the hub (at most `limit` if > 0)."""
    if path:
        return _file_examples(task, Path(path), limit)
    if task.generated is not None:
        return [Example(p, r) for p, r in task.generated(limit, options or {})]
    if task.hub is None:
        raise UserError(f"task {task.name}: give its file with --task_file {task.name}=PATH")
    return _hub_examples(task, limit)


def _file_examples(task: Task, path: Path, limit: int) -> list[Example]:
    if not path.is_file():
        raise UserError(f"--task_file {task.name}={path}: file not found")
    examples = _examples(task, iter_records(path), f"{path}:", limit)
    if not examples:
        raise UserError(f"--task_file {task.name}={path}: no rows")
    return examples


def _hub_examples(task: Task, limit: int) -> list[Example]:
    hub_id, subset, split = task.hub
    try:
        import datasets

        rows = datasets.load_dataset(hub_id, subset, split=split)
    except Exception as exc:  # offline, or the hub refuses: one line, and the way out
        raise UserError(f"task {task.name}: cannot load {hub_id} ({subset}, {split}) from the hub "
                        f"({type(exc).__name__}); offline, give a local file: --task_file {task.name}=PATH") from None
    return _examples(task, rows, hub_id, limit)


def _examples(task: Task, rows: Iterable[dict], where: str, limit: int) -> list[Example]:
    """The task's examples from `rows` (at most `limit` if > 0); a row without a field the task needs is one
    line naming where it came from, the row and the field."""
    examples = []
    for row_number, row in enumerate(rows, start=1):
        try:
            examples.append(task.from_row(row))
        except KeyError as exc:
            raise UserError(f"{where} row {row_number}: missing field {exc.args[0]} for task {task.name}") from None
        if limit and len(examples) == limit:
            break
    return examples
