from __future__ import annotations

import json
import re

import pytest

from hrm_ray.data.demo_corpus import code_pairs, math_problems, write_demo_sources


def test_math_chains_are_correct():
    for row in math_problems(200, seed=1):
        value = None
        for step in row["response"].splitlines()[:-1]:
            left, result = step.split(" = ")
            assert eval(left) == int(result)  # noqa: S307 - arithmetic we generated
            value = int(result)
        assert row["response"].endswith(f"#### {value}")


def test_code_pairs_never_put_the_body_in_the_prompt():
    for row in list(code_pairs())[:200]:
        assert row["response"].strip() and row["response"] not in row["prompt"]


@pytest.mark.timeout(60)
def test_write_demo_sources(tmp_path):
    paths = write_demo_sources(tmp_path, math_count=50)
    assert set(paths) == {"language", "math", "code"}
    language = [json.loads(line) for line in paths["language"].read_text().splitlines()]
    assert len(language) > 100 and all(row["text"] for row in language)
    assert len({row["id"] for row in language}) == len(language)
    assert re.search(r"\n", language[0]["text"])  # newlines kept
    assert not list(tmp_path.glob("*.tmp"))
