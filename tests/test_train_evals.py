"""What training measures beside the loss: validation per source of a mixture (its token-weighted mean is the
whole mix's loss), task evaluations every K validations, best-model selection on a task metric, `--val_every 0`."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm_ray.config import build_config
from hrm_ray.data.tokenizer import save_tokenizer, train_tokenizer
from hrm_ray.errors import UserError
from hrm_ray.train.checkpoint import CheckpointStore, read_meta
from hrm_ray.train.ray_trainer import train
from hrm_ray.train.task import selection_mode

TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1", "--wandb", "off",
        "--max_seq_len", "48", "--log_steps", "2", "--warmup_steps", "0", "--num_workers", "0"]
ARITH = [*TINY, "--synthetic_train_size", "64", "--synthetic_val_size", "16", "--batch_size", "8"]


def gsm8k_pairs(real_data: Path, count: int) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (real_data / "gsm8k" / "train.jsonl").read_text().splitlines()[:count]]
    return [(r["question"], r["answer"]) for r in rows]


def wiki_pairs(real_data: Path, count: int) -> list[tuple[str, str]]:
    """Paragraphs of WikiText-2 as continuation pairs: the first half read, the second half predicted."""
    texts = [t for t in pq.read_table(real_data / "wikitext2").column("text").to_pylist() if len(t) > 80][:count]
    return [(t[:len(t) // 2], t[len(t) // 2:]) for t in texts]


def write_prepared(path: Path, pairs: list[tuple[str, str]], n_val: int, tokenizer_file: Path) -> Path:
    """A prepared dataset (train/ and val/ Parquet triplets, tokenizer.json, meta.json) of (prompt, response)."""
    from hrm_ray.data.synthetic import make_triplets
    from hrm_ray.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_file)
    rows = make_triplets(pairs, tok, 48)
    for split, part in (("train", rows[n_val:]), ("val", rows[:n_val])):
        (path / split).mkdir(parents=True)
        pq.write_table(pa.table({k: pa.array([r[k] for r in part], pa.list_(pa.int32()))
                                 for k in ("encoder_ids", "decoder_input_ids", "labels")}),
                       path / split / "part-00000.parquet")
    (path / "tokenizer.json").write_bytes(tokenizer_file.read_bytes())
    meta = {"vocab_size": tok.get_vocab_size(), "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_seq_len": 48,
            "train_samples": len(rows) - n_val, "val_samples": n_val, "tokenizer_sha256": "test"}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def records(run_dir: Path, split: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


@pytest.mark.timeout(240)
def test_mixture_validates_per_source_and_selects_on_a_task_metric(ray_session, real_data, tmp_path, capsys):
    gsm, wiki = gsm8k_pairs(real_data, 60), wiki_pairs(real_data, 60)
    tokenizer = tmp_path / "tokenizer.json"
    save_tokenizer(train_tokenizer([t for pair in gsm + wiki for t in pair], 400), tokenizer)
    math_data = write_prepared(tmp_path / "gsm8k", gsm, 12, tokenizer)
    prose = write_prepared(tmp_path / "wiki", wiki, 20, tokenizer)
    dev = real_data / "gsm8k" / "train.jsonl"
    cfg = build_config(None, [*TINY, "--dataset", f"{math_data}:0.5,{prose}:0.5", "--batch_size", "8",
                              "--steps", "4", "--val_every", "2", "--save_dir", str(tmp_path / "runs"),
                              "--run_name", "mix", "--tasks", f"gsm8k={dev}", "eval.every=2", "eval.limit=3",
                              "eval.max_new_tokens=8", "train.select_on=gsm8k/exact_match"])
    result = train(cfg)
    run = tmp_path / "runs" / "mix"
    val = records(run, "val")
    assert [r["step"] for r in val] == [2, 4]
    for record in val:  # the sources' token-weighted mean is the whole mix's loss
        tokens = {name: record[f"{name}/tokens"] for name in ("gsm8k", "wiki")}
        assert sum(tokens.values()) == record["tokens"]
        mean = sum(record[f"{name}/loss"] * n for name, n in tokens.items()) / record["tokens"]
        assert mean == pytest.approx(record["loss"], rel=1e-6)
        assert record["gsm8k/loss"] != pytest.approx(record["wiki/loss"], rel=1e-3)
        assert 0.0 <= record["wiki/gate_mean"] <= 1.0
    console = capsys.readouterr().out  # the val line groups each source's figures, the eval line the task's
    assert "val @ step 4 | loss " in console and " | gsm8k: loss " in console and " | wiki: loss " in console
    assert "eval @ step 4 | gsm8k: exact_match " in console
    evals = records(run, "eval")  # every 2nd validation: step 4 only
    assert [r["step"] for r in evals] == [4] and 0.0 <= evals[0]["gsm8k/exact_match"] <= 1.0
    assert result.selection_metric == "gsm8k/exact_match"
    assert result.best_metric == evals[0]["gsm8k/exact_match"]
    meta = read_meta(CheckpointStore(run, 0).latest())
    assert meta["selection_metric"] == "gsm8k/exact_match" and meta["selection_mode"] == "max"
    best = json.loads((run / "best-model" / "meta.json").read_text())  # not at step 2: the task did not run
    assert best["step"] == 4 and best["selection_metric"] == "gsm8k/exact_match"


@pytest.mark.timeout(120)
def test_val_every_0_validates_once_at_the_end(tmp_path):
    cfg = build_config(None, [*ARITH, "--steps", "3", "--val_every", "0", "--save_dir", str(tmp_path),
                              "--run_name", "noval"])
    result = train(cfg)
    assert result.step == 3 and [r["step"] for r in records(tmp_path / "noval", "val")] == [3]
    assert [p.name for p in CheckpointStore(tmp_path / "noval", 0).checkpoints()] == ["checkpoint_00000003"]


@pytest.mark.timeout(120)
def test_task_evaluations_every_k_validations_resume_and_a_wrong_select_on_is_one_line(real_data, tmp_path, capsys):
    flags = [*ARITH, "--val_every", "2", "--save_dir", str(tmp_path), "--tasks",
             f"gsm8k={real_data / 'gsm8k' / 'train.jsonl'}", "eval.every=2", "eval.limit=4", "eval.max_new_tokens=4"]
    chosen = [*flags, "--run_name", "k", "train.select_on=eval/gsm8k/exact_match"]
    train(build_config(None, [*chosen, "--steps", "4"]))
    result = train(build_config(None, [*chosen, "--steps", "8"]))  # resumed: the selection's best comes back
    assert "resumed 'k'" in capsys.readouterr().out
    evals = records(tmp_path / "k", "eval")
    assert [r["step"] for r in evals] == [4, 8] and set(evals[0]) >= {"gsm8k/exact_match"}
    assert result.selection_metric == "gsm8k/exact_match"
    assert result.best_metric == max(r["gsm8k/exact_match"] for r in evals)
    with pytest.raises(UserError, match="select_on: 'gsm8k/exact' is neither .*did you mean 'gsm8k/exact_match'"):
        train(build_config(None, [*flags, "--run_name", "bad", "--steps", "4", "train.select_on=gsm8k/exact"]))


def test_selection_direction_follows_the_metric_name():
    assert [selection_mode(m) for m in ("loss", "math/loss", "gsm8k/perplexity", "val_loss", "wiki/ppl")] == ["min"] * 5
    assert [selection_mode(m) for m in ("gsm8k/exact_match", "arc_easy/acc_norm", "mbpp/pass@1")] == ["max"] * 3
