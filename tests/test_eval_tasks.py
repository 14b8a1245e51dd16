"""Task evaluation (hrm_ray/evals): GSM8K answers, log-likelihoods, multiple choice end to end, the
`hrm-ray eval --tasks` command and its bad input."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from hrm_ray.cli import main
from hrm_ray.data.synthetic import char_tokenizer, make_triplets, pad_batch
from hrm_ray.errors import UserError
from hrm_ray.evals.answers import as_number, extract_answer, gsm8k_reference, same_answer
from hrm_ray.evals.runner import wilson_interval
from hrm_ray.evals.scoring import Thinking, cut_at_stop, generate_texts, loglikelihoods
from hrm_ray.evals.suite import load_suite, task_metrics
from hrm_ray.evals.tasks import get_task
from hrm_ray.infer.generate import complete
from tests.test_generate import write_run
from tests.test_model_hybrid import model_for, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


LINE = re.compile(r"^(\S+) (\S+) \d+\.\d% \[\d+\.\d, \d+\.\d\] \([\d,]+\)$")


def tiny_model(**overrides):
    tok = char_tokenizer()
    return model_for(tiny_config(vocab_size=tok.get_vocab_size(), **overrides)), tok


def arc_rows(n: int = 6) -> list[dict]:
    return [{"id": f"q{i}", "question": f"Which number is {i} + 1?",
             "choices": {"text": [str(i), str(i + 1), str(i + 7)], "label": ["A", "B", "C"]}, "answerKey": "B"}
            for i in range(n)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gsm8k_references_extract(real_data) -> None:
    lines = (real_data / "gsm8k" / "train.jsonl").read_text().splitlines()
    refs = [gsm8k_reference(json.loads(line)["answer"]) for line in lines]
    assert len(refs) == 300 and all(as_number(r) is not None for r in refs)
    assert refs[0] == "72"
    cases = [("1,000", "so she pays $1,000.\n#### 1,000"), ("-5", "The answer is -5."), ("0.5", "#### $0.50"),
             ("12", "He has 12 apples."), ("18", "#### 18 dollars."), ("3", "5 - 2 = 3.")]
    for reference, output in cases:
        assert same_answer(reference, extract_answer(output)), (reference, output)
    assert not same_answer("72", extract_answer("#### 73"))
    assert not same_answer("-5", extract_answer("The answer is 5."))


def test_wilson_interval() -> None:
    low, high = wilson_interval(12, 100)
    assert (round(low, 4), round(high, 4)) == (0.0700, 0.1981)
    assert wilson_interval(0, 0) == (0.0, 0.0)


@pytest.mark.timeout(30)
@torch.no_grad()
def test_loglikelihood_is_the_teacher_forced_logprob() -> None:
    model, tok = tiny_model(**{"hrm.use_halting": True})
    pairs = [("What is 3 + 4?", "7"), ("Hi", "there you"), ("What is 10 - 2?", "8")]
    how = Thinking(gate_scale=0.7, adaptive_halting=False, batch_size=2)
    got = loglikelihoods(model, tok, pairs, how)
    for (prompt, answer), (logprob, greedy) in zip(pairs, got, strict=True):
        batch = pad_batch(make_triplets([(prompt, answer)], tok))
        logits = model(batch, 0.7).logits[0, :-1].float()  # the positions before EOS
        target = batch["labels"][0, :-1]
        expected = torch.log_softmax(logits, -1).gather(-1, target[:, None]).sum()
        assert abs(logprob - float(expected)) < 1e-5
        assert greedy == bool((logits.argmax(-1) == target).all())


@pytest.mark.timeout(30)
def test_generation_matches_complete_and_stops() -> None:
    model, tok = tiny_model()
    prompts = ["What is 1 + 2?", "What is 40 - 3?", "x"]
    texts = generate_texts(model, tok, prompts, 8, how=Thinking(batch_size=2))
    assert texts == [c.text for c in complete(model, tok, prompts, 8)]
    stop = texts[0][2:4]
    assert generate_texts(model, tok, prompts[:1], 8, stop=[stop])[0] == cut_at_stop(texts[0], [stop])
    assert cut_at_stop("ab\nQuestion: c", ["\n\n", "Question:"]) == "ab\n"


@pytest.mark.timeout(60)
@torch.no_grad()
def test_multiple_choice_end_to_end(tmp_path) -> None:
    model, tok = tiny_model()
    path = write_jsonl(tmp_path / "arc.jsonl", arc_rows())
    metrics = task_metrics(model, tok, [f"arc_easy={path}"], batch_size=4)
    [(task, examples)] = load_suite([f"arc_easy={path}"])
    hits = 0
    for e in examples:
        logprobs = []
        for choice in e.choices:  # the model's own forward: BOS + choice scored after the prompt
            batch = pad_batch(make_triplets([(e.prompt, choice)], tok))
            logits = model(batch).logits[0, :-1].float()
            logprobs.append(torch.log_softmax(logits, -1).gather(-1, batch["labels"][0, :-1, None]).sum())
        hits += int(torch.stack(logprobs).argmax()) == e.gold
    assert task.metrics == ("acc", "acc_norm") and len(examples) == 6
    assert examples[0].choices[1] == "Answer: B. 1" and "Choices:\nA. 0" in examples[0].prompt
    assert metrics["arc_easy/acc"] == pytest.approx(hits / 6)
    assert 0.0 <= metrics["arc_easy/acc_norm"] <= 1.0


@pytest.mark.timeout(60)
def test_arithmetic_task_equals_the_existing_exact_match() -> None:
    """`--tasks arithmetic` scores the held-out problems `hrm-ray eval` does, with the same greedy answers."""
    from hrm_ray.data.synthetic import arithmetic_pairs
    from hrm_ray.evals.runner import predict

    model, tok = tiny_model()
    [(task, examples)] = load_suite(["arithmetic"], options={"synthetic_max_operand": 9})
    held_out = list(dict.fromkeys(arithmetic_pairs("test", 200, 9, 0)))
    assert [(e.prompt, e.reference) for e in examples] == held_out
    records = predict(model, tok, task, examples[:16], Thinking(batch_size=8), max_new_tokens=8)
    assert [r["output"] for r in records] == [c.text for c in complete(model, tok, [p for p, _ in held_out[:16]], 8)]
    assert [r["correct"] for r in records] == [c.text.strip() == a for c, (_, a) in
                                               zip(complete(model, tok, [p for p, _ in held_out[:16]], 8),
                                                   held_out[:16], strict=True)]


@pytest.mark.timeout(60)
def test_eval_command_writes_predictions(tmp_path, real_data, capsys) -> None:
    write_run(tmp_path)
    arc = write_jsonl(tmp_path / "arc.jsonl", arc_rows(4))
    out = tmp_path / "out"
    code = main(["eval", "--run_name", "demo", "--save_dir", str(tmp_path), "--tasks", f"gsm8k,arc_easy={arc}",
                 "--task_file", f"gsm8k={real_data / 'gsm8k' / 'train.jsonl'}", "--limit", "5",
                 "--max_new_tokens", "6", "--h_cycles", "1", "--no_adaptive_halting", "--output_dir", str(out)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    metric_lines = [line for line in lines if LINE.match(line)]
    assert [line.split()[:2] for line in metric_lines] == [["gsm8k", "exact_match"], ["arc_easy", "acc"],
                                                           ["arc_easy", "acc_norm"]]
    assert metric_lines[0].endswith("(5)") and metric_lines[1].endswith("(4)")
    records = [json.loads(x) for x in (out / "predictions-gsm8k.jsonl").read_text().splitlines()]
    assert len(records) == 5 and records[0]["reference"] == "72"
    assert set(records[0]) >= {"prompt", "output", "reference", "correct"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["arc_easy"]["acc"]["count"] == 4 and summary["thinking"]["h_cycles"] == 1
    assert code == main(["eval", "--run_name", "demo", "--save_dir", str(tmp_path), "--tasks", f"arc_easy={arc}"])
    assert len(list((tmp_path / "demo" / "evals").iterdir())) == 1  # the default: beside the run's model


@pytest.mark.timeout(60)
def test_bad_input_is_one_line(tmp_path, capsys) -> None:
    write_run(tmp_path)
    rows = arc_rows(3)
    del rows[2]["answerKey"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    base = ["eval", "--run_name", "demo", "--save_dir", str(tmp_path), "--output_dir", str(tmp_path / "out")]
    expected = {f"arc_easy={bad}": f"{bad}: row 3: missing field answerKey",
                "gsm8l": "unknown task 'gsm8l' (did you mean 'gsm8k'?)"}
    for tasks, message in expected.items():
        assert main([*base, "--tasks", tasks]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    with pytest.raises(UserError, match="give its file"):
        load_suite(["reasoning"])
    with pytest.raises(UserError, match="--task_file gsm8k=nowhere.jsonl: file not found"):
        load_suite(["gsm8k"], {"gsm8k": "nowhere.jsonl"})
    for directory in ("best-model", "checkpoint_00000010"):
        (tmp_path / "demo" / directory / "tokenizer.json").unlink()
    shutil.rmtree(tmp_path / "demo" / "checkpoint_00000010")
    assert main([*base, "--tasks", "arithmetic"]) == 2
    err = capsys.readouterr().err
    assert "lacks tokenizer.json" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "demo" / "evals").exists()
    assert get_task("arc_challenge").hub[1] == "ARC-Challenge"


@pytest.mark.timeout(30)
@torch.no_grad()
def test_h_cycles_is_test_time_depth() -> None:
    model, tok = tiny_model(**{"hrm.h_cycles": 3})
    pairs = [("What is 3 + 4?", "7")]
    shallow = loglikelihoods(model, tok, pairs, Thinking(h_cycles=1))
    assert model.hrm.cfg.h_cycles == 3  # restored after the block
    model.hrm.cfg.h_cycles = 1
    assert shallow == loglikelihoods(model, tok, pairs)
    model.hrm.cfg.h_cycles = 3
    assert shallow != loglikelihoods(model, tok, pairs)


@pytest.mark.timeout(60)
def test_mbpp_rows_run_in_the_sandbox(tmp_path) -> None:
    """MBPP rows load, and their reference code passes its tests in the sandbox while a wrong program fails."""
    from hrm_ray.evals.runner import _run_code, summarize

    rows = [{"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add(a, b):\r\n    return a + b",
             "test_list": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"], "test_setup_code": ""},
            {"task_id": 2, "text": "Write a function to square a number.", "code": "def sq(x):\n    return x * x",
             "test_list": ["assert sq(3) == 9"]}]
    [(task, examples)] = load_suite([f"mbpp={write_jsonl(tmp_path / 'mbpp.jsonl', rows)}"])
    assert "Your code should pass these tests:\nassert add(1, 2) == 3" in examples[0].prompt
    records = _run_code(examples, [f"```python\n{examples[0].reference}\n```", "def sq(x):\n    return x + x"])
    assert [r["correct"] for r in records] == [True, False] and "AssertionError" in records[1]["reason"]
    assert summarize(task, records)[0].line() == "mbpp pass@1 50.0% [9.5, 90.5] (2)"


def test_build_reasoning_files_load(tmp_path, real_data) -> None:
    """The prompt/response lines `data build-reasoning` writes: the response's final answer is the reference."""
    from hrm_ray.data.reasoning import format_arc, format_gsm8k

    raw = json.loads((real_data / "gsm8k" / "train.jsonl").read_text().splitlines()[1])
    rows = [dict(zip(("prompt", "response"), format_gsm8k(raw), strict=True)),
            dict(zip(("prompt", "response"), format_arc(arc_rows(1)[0]), strict=True))]
    path = write_jsonl(tmp_path / "reasoning.jsonl", rows)
    [(_, examples)] = load_suite([f"reasoning={path}"])
    assert [e.reference for e in examples] == ["10", "B"]
    [(_, gsm)] = load_suite([f"gsm8k={path}"], limit=1)
    assert gsm[0].prompt == raw["question"].strip() and gsm[0].reference == "10"
    assert extract_answer("Working 50 minutes, she earned $10.\n#### 10") == "10"
    assert extract_answer("Choices...\nAnswer: B. 1") == "B"
