"""Final answers out of free text, and whether two answers agree.

GSM8K references end in `#### n`; a model's answer is its own `#### n`, else "The answer is n", else its
last number. Numbers compare by value (commas, `$`, units, a trailing period and trailing zeros do not
count); answers that are not plain numbers go to `math_verify` when it is installed (the `[eval]` extra).
"""
from __future__ import annotations

import logging
import re
import threading
from decimal import Decimal, InvalidOperation

_MARKED = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer is[:\s]*(.+)", re.IGNORECASE)
_CHOICE = re.compile(r"Answer:\s*([A-Za-z0-9]{1,2})(?:[.)]|\s*$)", re.MULTILINE)  # 'Answer: B. text'

_ANSWER_LINE = re.compile(r"Answer:\s*(.+)\s*$")  # the response's last 'Answer: ...'
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def gsm8k_reference(answer: str) -> str:
    """The number after `#### ` of a GSM8K answer; ValueError when there is none."""
    found = _MARKED.search(answer)
    if not found:
        raise ValueError("no '#### answer' line")
    return first_line(found.group(1))


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1].strip() if found else None


def extract_answer(output: str) -> str:
    """A model output's final answer: `#### x`, else 'Answer: B.' (a choice), else `... answer is x`, else its
    last number, else the text."""
    choice = None if _MARKED.search(output) else choice_answer(output)
    if choice:
        return choice
    for pattern in (_MARKED, _ANSWER_IS):
        found = pattern.search(output)
        if found:
            line = first_line(found.group(1))
            if as_number(line) is not None or "\\" in line or "/" in line:
                return line
            return last_number(line) or line.rstrip(".")
    return last_number(output) or output.strip()


def as_number(text: str) -> Decimal | None:
    """'$1,234.50', '-7', '12 apples', '3.' -> the number; None when the text is not one number."""
    cleaned = text.strip().rstrip(".").replace(",", "").replace("$", "").strip()
    found = re.fullmatch(r"(-?\s*\d*\.?\d+)\s*(?:[A-Za-z%/²°][\w%/²°.]*\s*)*", cleaned)
    if not found:
        return None
    try:
        return Decimal(found.group(1).replace(" ", ""))
    except InvalidOperation:
        return None


def _math_verify(reference: str, prediction: str) -> bool | None:
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    # its timeouts use SIGALRM, which only the main thread may set (Ray actors and tests may not be in it)
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        gold, guess = parse(reference, parsing_timeout=timeout), parse(prediction, parsing_timeout=timeout)
        return bool(gold and guess and verify(gold, guess, timeout_seconds=timeout))
    except Exception:  # an unparsable answer is a wrong answer
        return False


def same_answer(reference: str, prediction: str) -> bool:
    """Numbers by value; anything else by math_verify (when installed), else as normalized text."""
    ref, pred = as_number(reference), as_number(prediction)
    if ref is not None and pred is not None:
        return ref == pred
    if _math_verify(reference, prediction):
        return True
    return " ".join(reference.split()).rstrip(".").lower() == " ".join(prediction.split()).rstrip(".").lower()


def choice_answer(text: str) -> str | None:
    """The label of 'Answer: B. ...' or a last line 'Answer: B' (build-reasoning's multiple-choice responses)."""
    found = _CHOICE.search(text)
    return found.group(1) if found else None


def final_answer(response: str) -> str:
    """The final answer of a build-reasoning response: its `#### x`, its choice 'Answer: B. text', its last
    'Answer: x', else the whole text."""
    if _MARKED.search(response):
        return gsm8k_reference(response)
    labelled = _ANSWER_LINE.search(response)
    return choice_answer(response) or (labelled.group(1).strip() if labelled else response.strip())
