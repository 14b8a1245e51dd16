"""normalize_qa_dataset: QA records of any layout -> prompt/response JSONL.

Field paths reach into nested records (`data.answers.text[0]`); SQuAD-style nested JSON
(data[].paragraphs[].qas[]) is flattened first to records like Hugging Face `squad`
({id, title, context, question, answers: {text: [...], answer_start: [...]}}), whose default
answer field is `answers.text[0]`.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from hrm_ray.data.records import FieldError, get_field, iter_records, parse_field_path, write_jsonl_atomic
from hrm_ray.errors import UserError


@dataclass
class QAReport:
    output: str
    written: int
    skipped_missing: int

    def summary(self) -> str:
        return f"wrote {self.written} prompt/response records to {self.output} (skipped missing: {self.skipped_missing})"


def _template_fields(template: str, flag: str) -> set[str]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise UserError(f"{flag} {template!r}: {exc}") from exc
    unknown = names - {"question", "answer", "context"}
    if unknown:
        raise UserError(f"{flag} {template!r}: unknown placeholder(s) {', '.join(sorted(unknown))} "
                        "(use {question}, {answer}, {context})")
    return names


def _is_squad_nested(path: Path) -> bool:
    if not str(path).lower().endswith(".json"):
        return False
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096)
    return '"paragraphs"' in head


def normalize_qa_dataset(input: str, output: str, question_field: str = "question",
                         answer_field: str | None = None, context_field: str | None = None,
                         prompt_template: str | None = None, response_template: str = "{answer}",
                         max_records: int | None = None, skip_missing: bool = False) -> QAReport:
    src = Path(input)
    if not src.is_file():
        raise UserError(f"--input not found: {src}")
    if max_records is not None and max_records < 1:
        raise UserError(f"--max-records must be >= 1, got {max_records}")
    if answer_field is None:
        answer_field = "answers.text[0]" if _is_squad_nested(src) else "answer"
    prompt_template = prompt_template or "{question}"
    used = _template_fields(prompt_template, "--prompt-template") | _template_fields(response_template, "--response-template")
    if context_field and "context" not in used:
        raise UserError("--context-field is set but neither template uses {context}")
    if "context" in used and not context_field:
        raise UserError("a template uses {context} but --context-field is not set")
    fields = {"question": question_field, "answer": answer_field}
    if context_field:
        fields["context"] = context_field
    parsed = {name: parse_field_path(path) for name, path in fields.items()}

    skipped = 0

    def records():
        nonlocal skipped
        for number, record in enumerate(iter_records(src, max_records), 1):
            try:
                values = {name: str(get_field(record, p)) for name, p in parsed.items()}
            except FieldError as exc:
                if skip_missing:
                    skipped += 1
                    continue
                raise UserError(f"{src}: record {number}: {exc} (pass --skip-missing to skip such records)") from None
            yield {"prompt": prompt_template.format(**values), "response": response_template.format(**values)}

    written = write_jsonl_atomic(output, records())
    return QAReport(str(output), written, skipped)
