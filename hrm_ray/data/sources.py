"""Turn source records into documents: plain text, or a prompt/response pair.

A document is a dict {doc_id, kind ("text" | "pair"), text, prompt, response, status}; status
is "ok" or the reason it was dropped (counted by the job, never silently lost).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hrm_ray.errors import UserError

TEXT_FIELDS = ("text", "content", "raw_content")
LANGUAGE_FIELDS = ("language", "lang")
MODES = ("continuation", "prompt_response", "auto")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
PAIR_FIELDS = ("prompt", "response", "question", "answer", "instruction", "input", "output", "messages",
               "conversations")
_ROLE_NAMES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}


@dataclass(frozen=True)
class ExtractOptions:
    mode: str = "auto"
    text_field: str | None = None
    language: str | None = None


def clean_text(text: str) -> str:
    """Normalise line endings, drop control characters and trailing spaces; keep newlines,
    tabs and indentation."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return text.strip("\n")


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _chat_pair(turns: Any) -> tuple[str, str] | None:
    """Chat `messages`/`conversations`: the last assistant turn is the response, the turns
    before it the prompt."""
    if not isinstance(turns, list) or not turns:
        return None
    norm: list[tuple[str, str]] = []
    for turn in turns:
        if not isinstance(turn, dict):
            return None
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            return None
        norm.append((_ROLE_NAMES.get(role, role), content))
    last = max((i for i, (role, _) in enumerate(norm) if role == "assistant"), default=None)
    if not last:  # no assistant turn, or nothing before it
        return None
    before = norm[:last]
    if len(before) == 1 and before[0][0] == "user":
        return before[0][1], norm[last][1]
    return "\n".join(f"{role}: {content}" for role, content in before), norm[last][1]


def find_pair(record: dict[str, Any]) -> tuple[str, str] | None:
    """A prompt/response pair in any of the layouts we know, else None."""
    if record.keys().isdisjoint(PAIR_FIELDS):  # plain text records: one cheap test
        return None
    for prompt_key, response_key in (("prompt", "response"), ("question", "answer")):
        prompt, response = _as_text(record.get(prompt_key)), _as_text(record.get(response_key))
        if prompt is not None and response is not None:
            return prompt, response
    instruction, output = _as_text(record.get("instruction")), _as_text(record.get("output"))
    if instruction is not None and output is not None:
        extra = _as_text(record.get("input")) or ""
        return (f"{instruction}\n\n{extra}" if extra.strip() else instruction), output
    for key in ("messages", "conversations"):
        if key in record:
            return _chat_pair(record[key])
    return None


def find_text(record: dict[str, Any], text_field: str | None) -> str | None:
    if text_field:
        return _as_text(record.get(text_field))
    for key in TEXT_FIELDS:
        if key in record:
            return _as_text(record[key])
    return None


def extract_document(record: dict[str, Any], doc_id: str, opts: ExtractOptions) -> dict[str, Any]:
    doc = {"doc_id": doc_id, "kind": "text", "text": "", "prompt": "", "response": "", "status": "ok"}
    if opts.language:
        lang = next((record[k] for k in LANGUAGE_FIELDS if k in record), None)
        if lang is not None and lang != opts.language:
            doc["status"] = "language"
            return doc
    pair = find_pair(record) if opts.mode in ("prompt_response", "auto") else None
    if pair is not None:
        prompt, response = clean_text(pair[0]), clean_text(pair[1])
        if not prompt or not response:
            doc["status"] = "empty_prompt_or_response"
        doc.update(kind="pair", prompt=prompt, response=response)
        return doc
    if opts.mode == "prompt_response":
        doc["status"] = "no_prompt_response_fields"
        return doc
    text = find_text(record, opts.text_field)
    if text is None:
        doc["status"] = "no_text_field"
        return doc
    doc["text"] = clean_text(text)
    if not doc["text"]:
        doc["status"] = "empty"
    return doc


def fields_read(opts: ExtractOptions) -> set[str]:
    """Every top-level field `extract_document` may look at (columnar readers need no others)."""
    fields = set(TEXT_FIELDS) | set(LANGUAGE_FIELDS) | set(PAIR_FIELDS)
    return fields | {opts.text_field} if opts.text_field else fields


def check_source_fields(first_record: dict[str, Any], path: str, opts: ExtractOptions) -> None:
    """Fail fast when a file has nothing the chosen mode can use (names file and columns)."""
    has_pair = find_pair(first_record) is not None
    has_text = (opts.text_field in first_record) if opts.text_field else any(k in first_record for k in TEXT_FIELDS)
    ok = {"prompt_response": has_pair, "continuation": has_text, "auto": has_pair or has_text}[opts.mode]
    if not ok:
        wanted = {
            "prompt_response": "prompt/response, question/answer, instruction/output or messages/conversations",
            "continuation": f"text field {opts.text_field!r}" if opts.text_field else "one of " + "/".join(TEXT_FIELDS),
        }
        need = wanted.get(opts.mode, wanted["prompt_response"] + " or " + wanted["continuation"])
        raise UserError(f"{path}: no usable field for --mode {opts.mode} (need {need}; "
                        f"columns are {', '.join(sorted(first_record)) or 'none'})")
