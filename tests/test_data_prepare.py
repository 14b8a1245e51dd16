"""prepare_language_dataset on Ray Data: real WikiText-2 and GSM8K, a fixture of every format,
exact counts, target never in the encoder, byte-identical reruns, atomic output, the CLI script."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm_ray.data.meta import read_meta
from hrm_ray.data.prepare import PrepareConfig, prepare_language_dataset
from hrm_ray.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from hrm_ray.data.triplets import TripletConfig, continuation_triplets
from hrm_ray.data.validate import validate_dataset
from hrm_ray.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CODE = "def area(r):\n    # circle\n    return 3.14159 * r * r\n\n\nclass Shape:\n    pass\n"


def _rows(path: Path, split: str) -> list[dict]:
    return pq.read_table(sorted((path / split).glob("*.parquet"))).to_pylist()


def _files_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory, real_data):
    texts = pq.read_table(real_data / "wikitext2" / "train-00000-of-00002.parquet")["text"].to_pylist()[:300]
    texts += [json.loads(line)["question"] for line in open(real_data / "gsm8k" / "train.jsonl")][:300]
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(train_tokenizer(texts + [CODE], vocab_size=600, num_threads=1), path)
    return path


@pytest.mark.timeout(120)
def test_wikitext_prepare_validates_and_reruns_byte_identical(ray_session, real_data, tmp_path):
    def run(dest: Path):
        return prepare_language_dataset(PrepareConfig(
            source=[str(real_data / "wikitext2")], dest=str(dest), vocab_size=500, max_seq_len=64,
            val_ratio=0.2, max_records=150, tokenizer_workers=2, tokenizer_num_threads=1,
            rows_per_shard=300, language="en"))

    first = run(tmp_path / "a")
    run(tmp_path / "b")
    assert first.documents_read == 300 and first.files == 2
    assert first.samples["train"] > 0 and first.samples["val"] > 0
    assert first.documents_used + sum(first.dropped.values()) == first.documents_read
    assert len(list((tmp_path / "a" / "train").glob("*.parquet"))) >= 2  # rolled shards
    assert _files_bytes(tmp_path / "a") == _files_bytes(tmp_path / "b")
    meta = read_meta(tmp_path / "a")
    assert (meta.vocab_size, meta.pad_id, meta.bos_id, meta.eos_id, meta.max_seq_len) == (500, 0, 1, 2, 64)
    assert meta.train_samples == first.samples["train"] and meta.val_samples == first.samples["val"]
    report = validate_dataset(str(tmp_path / "a"))
    assert report.ok, report.summary()

    # continuation: the decoder target is the text right after the encoder's context, never inside it
    tok = load_tokenizer(tmp_path / "a")
    source = "\n".join(pq.read_table(real_data / "wikitext2").column("text").to_pylist())
    for row in _rows(tmp_path / "a", "train")[:60]:
        context = tok.decode(row["encoder_ids"], skip_special_tokens=False)
        target = tok.decode(row["labels"][:-1], skip_special_tokens=False)
        assert row["labels"][-1] == 2 and row["decoder_input_ids"] == [1] + row["labels"][:-1]
        assert context + target in source
        assert len(row["encoder_ids"]) <= 64 and len(row["labels"]) <= 64


@pytest.mark.timeout(90)
def test_gsm8k_prompt_response_never_leaks_the_answer(ray_session, real_data, tmp_path, small_tokenizer):
    report = prepare_language_dataset(PrepareConfig(
        source=[str(real_data / "gsm8k" / "train.jsonl")], dest=str(tmp_path / "g"),
        tokenizer=str(small_tokenizer), max_seq_len=512, val_ratio=0.1, max_records=200,
        mode="prompt_response", tokenizer_workers=2, format="both"))
    assert report.documents_read == 200 and report.dropped == {} and not report.tokenizer_trained
    assert report.samples["train"] + report.samples["val"] == 200
    records = [json.loads(line) for line in open(real_data / "gsm8k" / "train.jsonl")][:200]
    by_question = {r["question"].strip(): r["answer"].strip() for r in records}
    tok = load_tokenizer(small_tokenizer)
    rows = _rows(tmp_path / "g", "train") + _rows(tmp_path / "g", "val")
    for row in rows:
        prompt, answer = tok.decode(row["encoder_ids"]), tok.decode(row["labels"][:-1])
        assert by_question[prompt] == answer  # encoder = question only, decoder = the answer
        assert "####" not in prompt and "####" in answer
    # --format both also writes the seed's JSONL layout with the same rows
    jsonl = [json.loads(line) for line in open(tmp_path / "g" / "train.jsonl")]
    assert jsonl == _rows(tmp_path / "g", "train")
    assert validate_dataset(str(tmp_path / "g")).ok


def _write_format_fixtures(root: Path) -> None:
    root.mkdir()
    long_en = "The quick brown fox jumps over the lazy dog. " * 6
    pq.write_table(pa.Table.from_pylist([
        {"id": "1", "text": long_en, "language": "en"},
        {"id": "2", "text": "Le renard brun rapide saute.", "language": "fr"},
        {"id": "3", "text": "   ", "language": "en"},
        {"id": "4", "text": "Short English line about foxes.", "language": "en"},
    ]), root / "a.parquet")
    (root / "b.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "What is 2 + 2?", "response": "4"},
        {"prompt": "Name a colour.", "response": "Blue"},
        {"prompt": "Empty answer?", "response": ""},
    ]) + "\n")
    with gzip.open(root / "c.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in [
            {"instruction": "Translate to French", "input": "dog", "output": "chien"},
            {"instruction": "Say hi", "input": "", "output": "hi"},
        ]))
    (root / "d.json").write_text(json.dumps([
        {"messages": [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi there."}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2*3?"},
                      {"role": "assistant", "content": "6"}]},
    ]))
    table = pa.Table.from_pylist([{"content": long_en}, {"content": "Foxes and dogs are animals."}])
    with pa.OSFile(str(root / "e.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    (root / "f.txt").write_text(CODE)


@pytest.mark.timeout(90)
def test_every_format_with_exact_counts(ray_session, tmp_path, small_tokenizer):
    _write_format_fixtures(tmp_path / "src")
    report = prepare_language_dataset(PrepareConfig(
        source=[str(tmp_path / "src")], dest=str(tmp_path / "out"), tokenizer=str(small_tokenizer),
        max_seq_len=32, encoder_len=12, decoder_len=8, val_ratio=0.0, language="en", tokenizer_workers=2))
    assert report.files == 6 and report.documents_read == 14
    assert report.dropped == {"language": 1, "empty": 1, "empty_prompt_or_response": 1}
    assert report.documents_used == 11
    tok = load_tokenizer(small_tokenizer)
    cfg = TripletConfig.build(32, 12, 8, 1, 2)
    texts = ["The quick brown fox jumps over the lazy dog. " * 6, "Short English line about foxes.",
             "The quick brown fox jumps over the lazy dog. " * 6, "Foxes and dogs are animals.", CODE.strip("\n")]
    windows = sum(len(continuation_triplets(cfg, tok.encode(t.rstrip(), add_special_tokens=False).ids)) for t in texts)
    assert report.samples == {"train": windows + 6, "val": 0}
    rows = _rows(tmp_path / "out", "train")
    assert len(rows) == report.samples["train"] == read_meta(tmp_path / "out").train_samples
    decoded = [(tok.decode(r["encoder_ids"]), tok.decode(r["labels"][:-1])) for r in rows]
    assert ("What is 2 + 2?", "4") in decoded and ("Translate to French\n\ndog", "chien") in decoded
    assert ("system: Be brief.\nuser: 2*3?", "6") in decoded and ("Hello?", "Hi there.") in decoded
    code_rows = [enc + tgt for enc, tgt in decoded if "def area" in enc]
    assert code_rows and code_rows[0].startswith("def area(r):\n    # circle")  # indentation kept


@pytest.mark.timeout(60)
def test_failed_job_leaves_no_dataset(ray_session, tmp_path, small_tokenizer):
    src = tmp_path / "src"
    src.mkdir()
    lines = [json.dumps({"text": f"document number {i} about foxes"}) for i in range(3000)]
    lines[2500] = "{broken json"
    (src / "docs.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"docs.jsonl: line 2501: invalid JSON"):
        prepare_language_dataset(PrepareConfig(source=[str(src)], dest=str(tmp_path / "out"),
                                               tokenizer=str(small_tokenizer), tokenizer_workers=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no dest, no leftover temp dir
    with pytest.raises(UserError, match="no usable field for --mode prompt_response"):
        prepare_language_dataset(PrepareConfig(source=[str(src)], dest=str(tmp_path / "out"),
                                               tokenizer=str(small_tokenizer), mode="prompt_response"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        prepare_language_dataset(PrepareConfig(source=[str(src)], dest=str(tmp_path / "taken")))


@pytest.mark.timeout(90)
def test_job_script_uses_ray_address(ray_session, tmp_path, real_data, small_tokenizer):
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    dest = tmp_path / "wiki"
    cmd = [sys.executable, str(REPO / "data_jobs" / "prepare_language_dataset.py"),
           "--source", str(real_data / "wikitext2"), "--dest", str(dest), "--tokenizer", str(small_tokenizer),
           "--max-seq-len", "64", "--max-files", "1", "--max-records", "40", "--tokenizer-workers", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "documents read 40" in done.stdout
    check = subprocess.run([sys.executable, str(REPO / "data_jobs" / "validate_dataset.py"), str(dest)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.startswith("OK"), check.stdout
    bad = subprocess.run(cmd[:2] + ["--source", str(tmp_path / "nope"), "--dest", str(tmp_path / "x")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --source not found")


@pytest.mark.timeout(90)
def test_output_rows_do_not_depend_on_how_files_are_cut(ray_session, tmp_path, small_tokenizer):
    """Workers write their own shards: many small work units give the same rows, in the same order,
    and the same counts as one unit per file; JSONL parts are joined in unit order."""
    src = tmp_path / "src"
    src.mkdir()
    docs = [{"text": f"Document {i}: the quick brown fox jumps over the lazy dog. " * (1 + i % 7)} for i in range(400)]
    (src / "a.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    pq.write_table(pa.Table.from_pylist(docs[:250]), src / "b.parquet", row_group_size=20)
    reports = {}
    for name, unit_bytes in (("whole", 1 << 30), ("cut", 4000)):
        reports[name] = prepare_language_dataset(PrepareConfig(
            source=[str(src)], dest=str(tmp_path / name), tokenizer=str(small_tokenizer), max_seq_len=32,
            val_ratio=0.2, format="both", unit_bytes=unit_bytes, tokenizer_workers=2))
    assert len(list((tmp_path / "cut" / "train").glob("*.parquet"))) > 10
    for split in ("train", "val"):
        assert _rows(tmp_path / "cut", split) == _rows(tmp_path / "whole", split)
        assert (tmp_path / "cut" / f"{split}.jsonl").read_bytes() == (tmp_path / "whole" / f"{split}.jsonl").read_bytes()
    assert reports["cut"].samples == reports["whole"].samples and reports["cut"].tokens == reports["whole"].tokens
    assert reports["cut"].documents_read == 650 and not (tmp_path / "cut" / ".parts").exists()
    assert validate_dataset(str(tmp_path / "cut")).ok


def test_actor_threads_never_ask_more_than_the_largest_node():
    from hrm_ray.ray_env import actor_threads

    assert actor_threads(4, [16.0, 8.0], "--t") == (4, None)
    threads, note = actor_threads(30, [16.0, 8.0], "--tokenizer-num-threads")
    assert threads == 16 and note.startswith("--tokenizer-num-threads 30: the largest node of the cluster has 16")
    assert actor_threads(30, [0.5], "--t")[0] == 1


@pytest.mark.timeout(90)
def test_more_tokenizer_threads_than_any_node_has_are_capped_not_waited_for(ray_session, real_data, tmp_path,
                                                                            small_tokenizer, capsys):
    """The curriculum's Stage B flags on the 2-CPU session Ray: each actor would request 30 CPUs and wait for
    ever; capped at the largest node's CPUs, the job finishes and says so once. The capped actor takes a whole
    node: it starts once earlier tests' actors have given their CPUs back (tests/conftest.py)."""
    report = prepare_language_dataset(PrepareConfig(
        source=[str(real_data / "gsm8k" / "train.jsonl")], dest=str(tmp_path / "g"),
        tokenizer=str(small_tokenizer), max_seq_len=256, max_records=50, mode="prompt_response",
        tokenizer_num_threads=30, tokenizer_batch_size=8192))
    assert report.documents_read == 50
    notes = [line for line in capsys.readouterr().out.splitlines() if "--tokenizer-num-threads 30" in line]
    assert notes == ["--tokenizer-num-threads 30: the largest node of the cluster has 2 CPU(s); each actor runs "
                     "2 thread(s) and requests 2 CPU(s)"]
