"""Generation: KV cache == recompute, batched == one by one, sampling filters, halting, CLI and loading."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from hrm_ray.cli import main
from hrm_ray.config import Config, save_yaml
from hrm_ray.data.synthetic import char_tokenizer
from hrm_ray.errors import UserError
from hrm_ray.infer.generate import complete
from hrm_ray.infer.loading import load_for_inference
from hrm_ray.models.hrm_lm.sampling import filter_logits, next_token
from tests.test_model_hybrid import model_for, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


PROMPTS = [[5, 9, 11, 7, 30], [6, 12], [20, 21, 22, 23, 24, 25, 26], [8]]


def padded(prompts: list[list[int]], left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        span = slice(width - len(p), width) if left else slice(0, len(p))
        ids[i, span], mask[i, span] = torch.tensor(p), True
    return ids, mask


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["residual", "prefix"])
def test_cache_matches_recompute(mode: str) -> None:
    model = model_for(tiny_config(**{"bridge.mode": mode}))
    ids, mask = padded(PROMPTS)
    cached = model.generate(ids, mask, 24, eos_id=None)
    recomputed = model.generate(ids, mask, 24, eos_id=None, use_cache=False)
    assert cached.tokens.shape == (4, 24)
    assert torch.equal(cached.tokens, recomputed.tokens)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("backend", ["transformer", "mamba2"])
def test_batched_equals_one_by_one(backend: str) -> None:
    model = model_for(tiny_config(encoder_backend=backend, **{"hrm.use_halting": True}))
    with torch.no_grad():
        model.hrm.halt_head.weight.normal_(0, 0.5)  # so the prompts halt after different cycles
        model.hrm.halt_head.bias.fill_(-1.0)
    singles = [model.generate(*padded([p]), 12, eos_id=3) for p in PROMPTS]
    for left in (False, True):
        batched = model.generate(*padded(PROMPTS, left=left), 12, eos_id=3)
        for i, single in enumerate(singles):
            n = int(single.lengths[0])
            assert int(batched.lengths[i]) == n
            assert torch.equal(batched.tokens[i, :n], single.tokens[0, :n])
            assert batched.cycles_used[i] == single.cycles_used[0]


@pytest.mark.timeout(30)
def test_eos_stops_and_pads() -> None:
    model = model_for(tiny_config())
    ids, mask = padded(PROMPTS)
    free = model.generate(ids, mask, 8, eos_id=None)
    eos = int(free.tokens[0, 2])  # make the third token of the first prompt its end
    result = model.generate(ids, mask, 8, eos_id=eos)
    assert result.lengths[0] == (free.tokens[0] != eos).long().cumprod(0).sum()
    n = int(result.lengths[0])
    assert (result.tokens[0, n:] == eos).all()


def test_filter_logits_respects_top_k_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = lambda out: torch.isfinite(out)[0].tolist()
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False, False]
    assert kept(filter_logits(logits, top_p=0.8)) == [True, True, True, False, False]
    assert kept(filter_logits(logits, top_k=4, top_p=0.9)) == [True, True, True, True, False]
    shuffled = logits[:, [3, 0, 4, 2, 1]]
    assert kept(filter_logits(shuffled, top_p=0.8)) == [False, True, False, True, True]
    g = torch.Generator().manual_seed(0)
    draws = {int(next_token(logits.expand(500, -1), 1.0, top_k=2, generator=g)[i]) for i in range(500)}
    assert draws == {0, 1}


@pytest.mark.timeout(30)
def test_sampling_is_seeded_and_filtered() -> None:
    model = model_for(tiny_config())
    ids, mask = padded(PROMPTS)
    greedy = model.generate(ids, mask, 10, eos_id=None)
    assert torch.equal(model.generate(ids, mask, 10, eos_id=None, temperature=1.0, top_k=1).tokens, greedy.tokens)
    run = lambda seed: model.generate(ids, mask, 10, eos_id=None, temperature=1.5, top_p=0.9,
                                      generator=torch.Generator().manual_seed(seed)).tokens
    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), greedy.tokens)


@pytest.mark.timeout(30)
def test_adaptive_halting_reports_cycles() -> None:
    model = model_for(tiny_config(**{"hrm.use_halting": True, "hrm.h_cycles": 4, "hrm.halt_threshold": 0.5}))
    ids, mask = padded(PROMPTS)
    with torch.no_grad():
        model.hrm.halt_head.bias.fill_(-3.0)  # p ~ 0.05 a cycle: never reaches 0.5 -> all 4 cycles
    assert model.generate(ids, mask, 2).cycles_used.tolist() == [4] * 4
    with torch.no_grad():
        model.hrm.halt_head.bias.fill_(3.0)  # p ~ 0.95: halts after the first cycle
    assert model.generate(ids, mask, 2).cycles_used.tolist() == [1] * 4
    assert model.generate(ids, mask, 2, adaptive_halting=False).cycles_used.tolist() == [4] * 4


def write_run(tmp_path, name: str = "demo") -> tuple[Config, torch.nn.Module]:
    """A run directory in the trainer's layout: best-model/ and a checkpoint_* dir."""
    tok = char_tokenizer()
    cfg = Config()
    cfg.model = tiny_config(vocab_size=tok.get_vocab_size())
    model = model_for(cfg.model)
    run = tmp_path / name
    for directory, file, payload in ((run / "best-model", "model.pt", model.state_dict()),
                                     (run / "checkpoint_00000010", "state.pt", {"model": model.state_dict(), "step": 10})):
        directory.mkdir(parents=True)
        torch.save(payload, directory / file)
        save_yaml(cfg, directory / "config.yaml")
        tok.save(str(directory / "tokenizer.json"))
        (directory / "meta.json").write_text(json.dumps({"step": 10}))
    return cfg, model


@pytest.mark.timeout(30)
def test_loading_and_complete(tmp_path) -> None:
    _, model = write_run(tmp_path)
    by_run = load_for_inference("demo", tmp_path)
    assert by_run.path.name == "best-model"
    by_ckpt = load_for_inference(checkpoint=tmp_path / "demo" / "checkpoint_00000010")
    for loaded in (by_run, by_ckpt):
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.model.state_dict()[key], value), key
    texts = complete(by_run.model, by_run.tokenizer, ["What is 1 + 2?", "Hi"], 6)
    assert [len(c.token_ids) <= 6 for c in texts] == [True, True]
    assert texts[0].cycles_used == 2
    shutil.rmtree(tmp_path / "demo" / "best-model")
    assert load_for_inference("demo", tmp_path).path.name == "checkpoint_00000010"
    checkpoint = tmp_path / "demo" / "checkpoint_00000010"
    for name in ("config.yaml", "tokenizer.json"):  # the trainer may keep these in the run dir instead
        shutil.move(checkpoint / name, tmp_path / "demo" / name)
    assert load_for_inference(checkpoint=checkpoint).path == checkpoint
    with pytest.raises(UserError, match="nope"):
        load_for_inference("nope", tmp_path)
    with pytest.raises(UserError, match="missing"):
        load_for_inference(checkpoint=tmp_path / "missing")


@pytest.mark.timeout(30)
def test_generate_command(tmp_path, capsys) -> None:
    write_run(tmp_path)
    code = main(["generate", "--prompt", "What is 12 + 7?", "--prompt", "What is 3 - 5?", "--run_name", "demo",
                 "--save_dir", str(tmp_path), "--max_new_tokens", "5", "--temperature", "0.7", "--top_k", "5",
                 "--no_cache", "--no_adaptive_halting"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("prompt: ") == 2 and "hrm cycles used: 2/2" in out
    assert main(["generate", "--prompt", "x", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--run_name", "demo", "--save_dir", str(tmp_path),
                 "--top_p", "0"]) == 2
    assert "--top_p" in capsys.readouterr().err
