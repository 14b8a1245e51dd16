"""The lm-evaluation-harness model `hrm-ray`: log-likelihoods equal the model's own, greedy generation equals
`hrm-ray generate` and stops at the task's stop sequences, a harness task on a local file runs offline."""
from __future__ import annotations

import json

import pytest
import torch

from hrm_ray.cli import main
from hrm_ray.data.synthetic import make_triplets, pad_batch
from hrm_ray.errors import UserError
from tests.test_generate import write_run

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from hrm_ray.infer.harness import HRMRayLM  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


def talkative_run(tmp_path, name: str = "demo") -> None:
    """write_run's run, with the special tokens' embeddings (tied to the LM head) zeroed, so that greedy
    decoding writes text instead of stopping at once."""
    _, model = write_run(tmp_path, name)
    with torch.no_grad():
        model.embed.weight[:4] = 0.0
    torch.save(model.state_dict(), tmp_path / name / "best-model" / "model.pt")
    torch.save({"model": model.state_dict(), "step": 10}, tmp_path / name / "checkpoint_00000010" / "state.pt")


@pytest.fixture
def harness_run(tmp_path):
    talkative_run(tmp_path)
    return tmp_path, HRMRayLM(run="demo", save_dir=str(tmp_path), gate_scale=0.5, batch_size=2, device="cpu")


@pytest.mark.timeout(60)
@torch.no_grad()
def test_loglikelihood_equals_the_models_own(harness_run) -> None:
    _, lm = harness_run
    pairs = [("What is 3 + 4?", " 7"), ("Question: hi\nAnswer:", " there"), ("What is 10 - 2?", "8")]
    got = lm.loglikelihood(requests("loglikelihood", pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, got, strict=True):
        batch = pad_batch(make_triplets([(context, continuation)], lm.tokenizer))
        logits = lm.model(batch, 0.5).logits[0, :-1].float()
        target = batch["labels"][0, :-1]
        assert abs(logprob - float(torch.log_softmax(logits, -1).gather(-1, target[:, None]).sum())) < 1e-5
        assert greedy == bool((logits.argmax(-1) == target).all())
    [rolling] = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [("What is 3 + 4?",)]))
    assert rolling == pytest.approx(lm.loglikelihood(requests("loglikelihood", [("", "What is 3 + 4?")]))[0][0])


@pytest.mark.timeout(60)
def test_generate_until_equals_generate_and_stops(harness_run, capsys) -> None:
    tmp_path, _ = harness_run
    lm = HRMRayLM(run="demo", save_dir=str(tmp_path), batch_size=2, device="cpu")
    prompts = ["What is 12 + 7?", "What is 3 - 5?", "Hi"]
    assert main(["generate", "--run_name", "demo", "--save_dir", str(tmp_path), "--max_new_tokens", "10",
                 *[x for p in prompts for x in ("--prompt", p)]]) == 0
    expected = [line.removeprefix("completion: ") for line in capsys.readouterr().out.splitlines()
                if line.startswith("completion: ")]
    free = lm.generate_until(requests("generate_until", [(p, {"until": [], "max_gen_toks": 10}) for p in prompts]))
    assert free == expected and min(map(len, free)) >= 5
    stop = free[0][3:5]
    stopped = lm.generate_until(requests("generate_until", [(prompts[0], {"until": [stop], "max_gen_toks": 10}),
                                                            (prompts[1], {"until": "zzz", "max_gen_toks": 4})]))
    assert stopped[0] == free[0][:free[0].index(stop)] and stop not in stopped[0]
    assert stopped[1] == lm.tokenizer.decode(lm.tokenizer.encode(free[1]).ids[:4])


TASK_YAML = """task: hrm_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices.text}}}}"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.mark.timeout(120)
def test_harness_task_on_a_local_file(harness_run, monkeypatch, capsys) -> None:
    """A harness task whose dataset is a local file, offline, through lm_eval's own evaluator (the Python form
    of `hrm-ray lm-eval ... --include_path DIR`, without indexing lm_eval's thousands of built-in tasks)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    tmp_path, lm = harness_run
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"question": f"Which number is {i} + 1?", "choices": {"text": [str(i), str(i + 1), "x"],
                                                                   "label": ["A", "B", "C"]}, "answerKey": "B"}
            for i in range(6)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "local_mc.yaml").write_text(TASK_YAML.format(data=tmp_path / "mc.jsonl",
                                                                       cache=tmp_path / "hf-cache"))
    manager = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    out = lm_eval.simple_evaluate(model="hrm-ray", model_args=f"run=demo,save_dir={tmp_path},gate_scale=0.5",
                                  tasks=["hrm_local_mc"], task_manager=manager, batch_size=4, device="cpu")
    acc = out["results"]["hrm_local_mc"]["acc,none"]
    hits = 0
    for r in rows:  # lm_eval's request: the choice after a space, the highest log-likelihood wins
        scores = lm.loglikelihood(requests("loglikelihood", [(f"Question: {r['question']}\nAnswer:", f" {c}")
                                                             for c in r["choices"]["text"]]))
        hits += max(range(3), key=lambda i: scores[i][0]) == 1
    assert acc == pytest.approx(hits / len(rows))
    assert main(["lm-eval", "--help"]) == 0  # every argument reaches lm_eval's own command line
    assert "--model_args" in capsys.readouterr().out
    with pytest.raises(UserError, match="unknown model_args"):
        HRMRayLM(run="demo", save_dir=str(tmp_path), bogus=1)
