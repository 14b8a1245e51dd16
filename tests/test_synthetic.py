"""Synthetic arithmetic data, the character tokenizer, batches, and the dry run."""
from __future__ import annotations

import math

import pytest
import torch
from tokenizers import Tokenizer

from hrm_ray.config import Config
from hrm_ray.data.synthetic import (
    arithmetic_pairs,
    char_tokenizer,
    make_triplets,
    pad_batch,
    reasoning_chain_pairs,
)
from hrm_ray.errors import UserError
from hrm_ray.train.dry_run import dry_run, format_dry_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_char_tokenizer_round_trips_and_saves(tmp_path) -> None:
    tok = char_tokenizer()
    assert [tok.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>", "<unk>")] == [0, 1, 2, 3]
    for text in ("What is 12 + 7?", "  two  spaces\nand a newline ", "-5", "~!@#$%^&*()_+{}|:\"<>?"):
        ids = tok.encode(text, add_special_tokens=False).ids
        assert len(ids) == len(text) and tok.decode(ids) == text
    tok.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert loaded.encode("What is 3 - 4?").ids == tok.encode("What is 3 - 4?").ids
    assert loaded.decode([1, *tok.encode("19").ids, 2]) == "19"


def test_arithmetic_answers_and_disjoint_splits() -> None:
    train = arithmetic_pairs("train", 5000, max_operand=30)
    val = arithmetic_pairs("val", 200, max_operand=30)
    test = arithmetic_pairs("test", 200, max_operand=30)
    for prompt, answer in train[:200] + val[:50]:
        a, op, b = prompt.removeprefix("What is ").removesuffix("?").split()
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        assert max(int(a), int(b)) <= 30
    problems = [{p for p, _ in split} for split in (train, val, test)]
    assert not problems[0] & problems[1] and not problems[0] & problems[2] and not problems[1] & problems[2]
    assert {p[0][8:].split()[1] for p in train} == {"+", "-"}
    # same problems for the same split whatever the sample count: the split is a property of the problem
    assert set(arithmetic_pairs("val", 50, max_operand=30)) <= set(val)
    assert arithmetic_pairs("train", 10, max_operand=30) == train[:10]
    assert len(set(val)) > 80 and len(set(val[:80])) == 80  # every problem once before any repeats
    with pytest.raises(UserError, match="split"):
        arithmetic_pairs("dev", 10)


def test_reasoning_chains_are_correct_and_split() -> None:
    pairs = reasoning_chain_pairs("train", 50, max_operand=20, terms=3)
    val = {p for p, _ in reasoning_chain_pairs("val", 20, max_operand=20, terms=3)}
    assert not {p for p, _ in pairs} & val
    for prompt, answer in pairs:
        assert answer.endswith(f"The answer is {eval(prompt.removeprefix('What is ').removesuffix('?'))}.")


def test_triplets_and_pad_batch() -> None:
    tok = char_tokenizer()
    rows = make_triplets([("What is 12 + 7?", "19"), ("What is 1 - 2?", "-1")], tok)
    assert tok.decode(rows[0]["encoder_ids"]) == "What is 12 + 7?"
    assert rows[0]["decoder_input_ids"] == [1, *tok.encode("19").ids]
    assert rows[0]["labels"] == [*tok.encode("19").ids, 2]
    batch = pad_batch(rows, pad_id=0)
    assert set(batch) == {"encoder_ids", "encoder_mask", "decoder_input_ids", "labels", "decoder_mask"}
    assert batch["encoder_mask"].dtype == torch.bool and batch["decoder_mask"].dtype == torch.bool
    assert batch["encoder_ids"].shape == (2, 15) and batch["encoder_mask"][1].sum() == 14
    assert batch["encoder_ids"][1, 14] == 0
    assert batch["labels"][0].tolist() == rows[0]["labels"]
    assert batch["labels"][1].tolist() == rows[1]["labels"]  # same length: no -100
    short = pad_batch([rows[0], {**rows[1], "labels": rows[1]["labels"][:1], "decoder_input_ids": [1]}], 0)
    assert short["labels"][1].tolist() == [rows[1]["labels"][0], -100, -100]
    assert short["decoder_mask"][1].tolist() == [True, False, False]


@pytest.mark.timeout(60)
def test_dry_run_reports_loss_and_diagnostics() -> None:
    cfg = Config()
    cfg.model.d_model, cfg.model.encoder_layers, cfg.model.decoder_layers = 64, 1, 1
    cfg.model.hrm.deep_supervision, cfg.model.hrm.use_halting = True, True
    cfg.train.batch_size = 4
    result = dry_run(cfg)
    for key in ("loss", "ce", "deep_supervision", "halting", "gate_mean", "halt_sum_mean", "cycles_used",
                "grad_norm", "hrm_grad_norm"):
        assert math.isfinite(result[key]), key
    assert result["hrm_grad_norm"] > 0 and result["num_tokens"] > 0
    assert abs(result["ce"] - math.log(100)) < 1.0  # near uniform over the 100-token vocabulary
    text = format_dry_run(result)
    assert "loss" in text and "gate_mean" in text
