"""Task evaluation on a Ray Data actor pool equals the in-process evaluation; an impossible pool fails at once."""
from __future__ import annotations

import pytest

from hrm_ray.cli import main
from hrm_ray.errors import UserError
from hrm_ray.evals.runner import predict
from hrm_ray.evals.scoring import Thinking
from hrm_ray.evals.tasks import Example, get_task
from hrm_ray.infer.loading import load_for_inference
from hrm_ray.infer.ray_eval import plan_pool, predict_with_ray
from tests.test_eval_harness import talkative_run


@pytest.mark.timeout(240)
def test_ray_actors_equal_in_process(tmp_path, ray_session) -> None:
    talkative_run(tmp_path)
    loaded = load_for_inference("demo", tmp_path)
    task = get_task("arithmetic")
    examples = [Example(f"What is {i} + {3 * i % 17}?", str(i + 3 * i % 17)) for i in range(64)]
    how = Thinking(batch_size=16)
    local = predict(loaded.model, loaded.tokenizer, task, examples, how, max_new_tokens=6)
    assert len({r["output"] for r in local}) >= 4  # the outputs differ from prompt to prompt
    for workers in (1, 2):
        [shard] = predict_with_ray(str(loaded.path), [(task, examples)], how, 6, num_workers=workers)
        assert shard == local


def test_impossible_pool_fails_at_once(tmp_path, ray_session, capsys) -> None:
    talkative_run(tmp_path)
    assert main(["eval", "--run_name", "demo", "--save_dir", str(tmp_path), "--tasks", "arithmetic", "--limit", "4",
                 "--num_workers", "2", "--use_gpu"]) == 2
    err = capsys.readouterr().err
    assert "evaluation pool needs 2 GPUs" in err and err.count("\n") == 1
    assert not (tmp_path / "demo" / "evals").exists()
    with pytest.raises(UserError, match="evaluation pool needs 1 GPUs"):
        plan_pool(1, use_gpu=True)
    with pytest.raises(UserError, match="evaluation pool needs 64 CPUs"):
        plan_pool(64, use_gpu=False)
