"""build_reasoning_dataset: reasoning benchmarks -> prompt/response JSONL.

Loading goes through Hugging Face `datasets`: the hub (with an optional cache dir), or local
files given by --local-path (.jsonl/.json/.parquet/.arrow/.csv, a directory of them, or a
`save_to_disk` directory). Each dataset has its own formatter over its real schema:

  gsm8k       question -> reasoning + "#### answer" (calculator <<...>> annotations stripped)
  mbpp        text + test_list -> code
  science_qa  [hint +] question + lettered choices -> solution (or lecture) + "Answer: X. choice"
  math_qa     Problem + options -> Rationale + "Answer: x"
  arc         question + choices{text,label} -> "Answer: X. choice"
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrm_ray.data.records import file_format, write_jsonl_atomic
from hrm_ray.errors import UserError

HUB_IDS: dict[str, tuple[str, str | None]] = {
    "gsm8k": ("openai/gsm8k", "main"),
    "mbpp": ("google-research-datasets/mbpp", "full"),
    "science_qa": ("derek-thomas/ScienceQA", None),
    "math_qa": ("allenai/math_qa", None),
    "arc": ("allenai/ai2_arc", "ARC-Challenge"),
}
_BUILDERS = {".jsonl": "json", ".jsonl.gz": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}
_CALC = re.compile(r"<<[^<>]*>>")


class SkipRecord(Exception):
    """The record cannot be used for this dataset (counted, with the reason)."""


def _need(record: dict[str, Any], key: str) -> Any:
    value = record.get(key)
    if value is None:
        raise KeyError(key)
    return value


def _letter_choices(choices: list[str], labels: list[str] | None = None) -> tuple[list[str], str]:
    labels = labels or [chr(ord("A") + i) for i in range(len(choices))]
    return labels, "\n".join(f"{label}. {text}" for label, text in zip(labels, choices, strict=True))


def format_gsm8k(r: dict[str, Any], keep_calc: bool = False, **_: Any) -> tuple[str, str]:
    answer = _need(r, "answer")
    return _need(r, "question").strip(), (answer if keep_calc else _CALC.sub("", answer)).strip()


def format_mbpp(r: dict[str, Any], **_: Any) -> tuple[str, str]:
    tests = "\n".join(_need(r, "test_list"))
    prompt = f"{_need(r, 'text').strip()}\nYour code should pass these tests:\n{tests}"
    return prompt, _need(r, "code").replace("\r\n", "\n").strip()


def format_science_qa(r: dict[str, Any], keep_image_questions: bool = False, **_: Any) -> tuple[str, str]:
    if r.get("image") is not None and not keep_image_questions:
        raise SkipRecord("needs_image")
    choices = list(_need(r, "choices"))
    labels, listing = _letter_choices(choices)
    answer = int(_need(r, "answer"))
    if not 0 <= answer < len(choices):
        raise SkipRecord("answer_out_of_range")
    hint = (r.get("hint") or "").strip()
    prompt = (f"Context: {hint}\n" if hint else "") + f"{_need(r, 'question').strip()}\nChoices:\n{listing}"
    rationale = (r.get("solution") or "").strip() or (r.get("lecture") or "").strip()
    final = f"Answer: {labels[answer]}. {choices[answer]}"
    return prompt, f"{rationale}\n{final}" if rationale else final


def format_math_qa(r: dict[str, Any], **_: Any) -> tuple[str, str]:
    rationale = _need(r, "Rationale").strip().strip('"').strip()
    prompt = f"{_need(r, 'Problem').strip()}\nOptions: {_need(r, 'options').strip()}"
    return prompt, f"{rationale}\nAnswer: {_need(r, 'correct').strip()}"


def format_arc(r: dict[str, Any], **_: Any) -> tuple[str, str]:
    choices = _need(r, "choices")
    texts, labels = list(_need(choices, "text")), list(_need(choices, "label"))
    key = str(_need(r, "answerKey"))
    if key not in labels:
        raise SkipRecord("answer_key_not_in_choices")
    _, listing = _letter_choices(texts, labels)
    return f"{_need(r, 'question').strip()}\nChoices:\n{listing}", f"Answer: {key}. {texts[labels.index(key)]}"


FORMATTERS: dict[str, Callable[..., tuple[str, str]]] = {
    "gsm8k": format_gsm8k, "mbpp": format_mbpp, "science_qa": format_science_qa,
    "math_qa": format_math_qa, "arc": format_arc,
}


def load_hf_dataset(name: str, split: str, local_path: str | None = None, cache_dir: str | None = None,
                    subset: str | None = None):
    """A `datasets.Dataset` from local files (their single split) or the hub."""
    import datasets

    if local_path:
        path = Path(local_path)
        if not path.exists():
            raise UserError(f"--local-path not found: {path}")
        if path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise UserError(f"{path}: no split '{split}' (has {', '.join(loaded)})")
                loaded = loaded[split]
            return loaded
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        files = [f for f in files if str(f).lower().endswith((*_BUILDERS, ".csv"))]
        if not files:
            raise UserError(f"--local-path {path}: no .jsonl/.json/.parquet/.arrow/.csv files")
        kinds = {"csv" if str(f).lower().endswith(".csv") else _BUILDERS[file_format(f)] for f in files}
        if len(kinds) > 1:
            raise UserError(f"--local-path {path}: mixed file types ({', '.join(sorted(kinds))})")
        return datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train",
                                     cache_dir=cache_dir)
    hub_id, default_subset = HUB_IDS[name]
    try:
        return datasets.load_dataset(hub_id, subset or default_subset, split=split, cache_dir=cache_dir)
    except Exception as exc:  # network, auth or unknown split: say what was tried
        raise UserError(f"could not load {hub_id} ({subset or default_subset}, split {split}) from the hub: "
                        f"{type(exc).__name__}: {exc}; use --local-path for offline files") from exc


@dataclass
class ReasoningReport:
    output: str
    dataset: str
    written: int
    skipped: dict[str, int]

    def summary(self) -> str:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"wrote {self.written} {self.dataset} prompt/response records to {self.output} (skipped: {skipped})"


def build_reasoning_dataset(dataset: str, output: str, split: str = "train", limit: int | None = None,
                            local_path: str | None = None, cache_dir: str | None = None,
                            subset: str | None = None, keep_calculator_annotations: bool = False,
                            keep_image_questions: bool = False) -> ReasoningReport:
    if dataset not in FORMATTERS:
        raise UserError(f"--dataset must be one of {', '.join(FORMATTERS)}, got {dataset!r}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    data = load_hf_dataset(dataset, split, local_path, cache_dir, subset)
    if limit is not None:
        data = data.select(range(min(limit, len(data))))
    fmt = FORMATTERS[dataset]
    options = {"keep_calc": keep_calculator_annotations, "keep_image_questions": keep_image_questions}
    skipped: dict[str, int] = {}
    where = local_path or HUB_IDS[dataset][0]

    def records() -> Iterator[dict[str, str]]:
        for number, record in enumerate(data, 1):
            try:
                prompt, response = fmt(record, **options)
            except SkipRecord as reason:
                skipped[str(reason)] = skipped.get(str(reason), 0) + 1
                continue
            except KeyError as exc:
                raise UserError(f"{where}: record {number}: field {exc} missing for --dataset {dataset} "
                                f"(columns: {', '.join(sorted(record))})") from None
            yield {"prompt": prompt, "response": response}

    written = write_jsonl_atomic(output, records())
    return ReasoningReport(output, dataset, written, skipped)
