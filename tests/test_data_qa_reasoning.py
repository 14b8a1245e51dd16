"""normalize_qa_dataset and build_reasoning_dataset: every input layout, field paths, clear
errors naming record and path, and each reasoning dataset's real schema, offline."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm_ray.commands.data import job_main
from hrm_ray.data.qa import normalize_qa_dataset
from hrm_ray.data.reasoning import build_reasoning_dataset
from hrm_ray.errors import UserError

pytestmark = pytest.mark.timeout(60)


def _read(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_squad_nested_json(tmp_path):
    squad = {"version": "1.1", "data": [{"title": "Foxes", "paragraphs": [
        {"context": "Foxes are small omnivores.", "qas": [
            {"id": "a", "question": "What are foxes?", "answers": [{"text": "small omnivores", "answer_start": 10}]},
            {"id": "b", "question": "Unanswerable?", "answers": [], "is_impossible": True}]}]}]}
    src = tmp_path / "squad.json"
    src.write_text(json.dumps(squad))
    report = normalize_qa_dataset(str(src), str(tmp_path / "out.jsonl"), context_field="context",
                                  prompt_template="{question}\nContext: {context}", skip_missing=True)
    assert (report.written, report.skipped_missing) == (1, 1)
    assert _read(tmp_path / "out.jsonl") == [
        {"prompt": "What are foxes?\nContext: Foxes are small omnivores.", "response": "small omnivores"}]
    with pytest.raises(UserError, match=r"squad.json: record 2: field 'answers.text\[0\]' not found"):
        normalize_qa_dataset(str(src), str(tmp_path / "fail.jsonl"))
    assert not (tmp_path / "fail.jsonl").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet", ".arrow"])
def test_field_paths_in_every_format(tmp_path, suffix):
    rows = [{"data": {"question": f"Q{i}?", "answers": {"text": [f"A{i}", "alt"]}}} for i in range(3)]
    src = tmp_path / f"qa{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), src)
    elif suffix == ".arrow":
        table = pa.Table.from_pylist(rows)
        with pa.OSFile(str(src), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        import gzip

        opener = gzip.open if suffix.endswith(".gz") else open
        with opener(src, "wt") as handle:
            handle.write("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "out.jsonl"
    report = normalize_qa_dataset(str(src), str(out), question_field="data.question",
                                  answer_field="data.answers.text[0]", response_template="Answer: {answer}",
                                  max_records=2)
    assert report.written == 2
    assert _read(out) == [{"prompt": "Q0?", "response": "Answer: A0"}, {"prompt": "Q1?", "response": "Answer: A1"}]


def test_qa_errors(tmp_path):
    src = tmp_path / "qa.jsonl"
    src.write_text('{"question": "q1", "answer": "a1"}\n{"question": "q2"}\n')
    with pytest.raises(UserError, match=r"qa.jsonl: record 2: field 'answer' not found"):
        normalize_qa_dataset(str(src), str(tmp_path / "o.jsonl"))
    with pytest.raises(UserError, match="--context-field is set but neither template"):
        normalize_qa_dataset(str(src), str(tmp_path / "o.jsonl"), context_field="ctx")
    with pytest.raises(UserError, match="unknown placeholder"):
        normalize_qa_dataset(str(src), str(tmp_path / "o.jsonl"), prompt_template="{title}")
    # the job script prints the same message on one line and exits 2
    assert job_main("normalize-qa", ["--input", str(src), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert job_main("normalize-qa", ["--input", str(src), "--output", str(tmp_path / "o.jsonl"),
                                     "--skip-missing"]) == 0
    assert _read(tmp_path / "o.jsonl") == [{"prompt": "q1", "response": "a1"}]


def test_gsm8k_from_a_local_file(real_data, tmp_path):
    out = tmp_path / "gsm8k.jsonl"
    report = build_reasoning_dataset("gsm8k", str(out), limit=50, cache_dir=str(tmp_path / "cache"),
                                     local_path=str(real_data / "gsm8k" / "train.jsonl"))
    assert report.written == 50
    rows = _read(out)
    assert rows[0]["prompt"].startswith("Natalia sold clips to 48 of her friends")
    assert rows[0]["response"] == ("Natalia sold 48/2 = 24 clips in May.\n"
                                   "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")
    assert all("<<" not in r["response"] and "\n#### " in r["response"] for r in rows)


FIXTURES = {
    "mbpp": ([{"task_id": 11, "text": "Write a function to add two numbers.", "code": "def add(a, b):\r\n    return a + b",
               "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "test_setup_code": "",
               "challenge_test_list": []}],
             {"prompt": "Write a function to add two numbers.\nYour code should pass these tests:\n"
                        "assert add(1, 2) == 3\nassert add(0, 0) == 0",
              "response": "def add(a, b):\n    return a + b"}),
    "science_qa": ([{"image": None, "question": "Which is a mammal?", "choices": ["shark", "whale"], "answer": 1,
                     "hint": "", "task": "closed choice", "grade": "grade3", "subject": "natural science",
                     "topic": "biology", "category": "Classify", "skill": "mammals",
                     "lecture": "Mammals have fur.", "solution": "A whale is a mammal. It breathes air."},
                    {"image": "img.png", "question": "Look at the picture.", "choices": ["a", "b"], "answer": 0,
                     "hint": "", "lecture": "", "solution": ""}],
                   {"prompt": "Which is a mammal?\nChoices:\nA. shark\nB. whale",
                    "response": "A whale is a mammal. It breathes air.\nAnswer: B. whale"}),
    "math_qa": ([{"Problem": "a train runs 60 km in 1 hour . speed ?", "Rationale": "\"speed = 60 / 1 = 60 km/h\"",
                  "options": "a ) 50 , b ) 60 , c ) 70 , d ) 80 , e ) 90", "correct": "b",
                  "annotated_formula": "divide(60, 1)", "linear_formula": "divide(n0,n1)|", "category": "physics"}],
                {"prompt": "a train runs 60 km in 1 hour . speed ?\nOptions: a ) 50 , b ) 60 , c ) 70 , d ) 80 , e ) 90",
                 "response": "speed = 60 / 1 = 60 km/h\nAnswer: b"}),
    "arc": ([{"id": "Mercury_1", "question": "Which gas do plants absorb?",
              "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]}, "answerKey": "B"}],
            {"prompt": "Which gas do plants absorb?\nChoices:\nA. oxygen\nB. carbon dioxide\nC. helium",
             "response": "Answer: B. carbon dioxide"}),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reasoning_formats_on_real_schemas(name, tmp_path):
    rows, expected = FIXTURES[name]
    src = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "out.jsonl"
    report = build_reasoning_dataset(name, str(out), local_path=str(src), cache_dir=str(tmp_path / "cache"))
    assert _read(out)[0] == expected
    if name == "science_qa":
        assert report.skipped == {"needs_image": 1}


def test_reasoning_errors(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(UserError, match=r"bad.jsonl: record 1: field 'answer' missing for --dataset gsm8k"):
        build_reasoning_dataset("gsm8k", str(tmp_path / "o.jsonl"), local_path=str(src), cache_dir=str(tmp_path / "c"))
    with pytest.raises(UserError, match="--local-path not found"):
        build_reasoning_dataset("arc", str(tmp_path / "o.jsonl"), local_path=str(tmp_path / "nope"))
    assert not (tmp_path / "o.jsonl").exists()
