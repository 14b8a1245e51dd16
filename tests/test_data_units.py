"""Data building blocks without Ray: formats, field paths, text, triplets, split, quotas, specs,
tokenizer, collate."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from hrm_ray.data.ingest import IGNORE_INDEX, collate_triplets, parse_dataset_spec
from hrm_ray.data.quotas import largest_remainder, max_total_without_reuse, proportions
from hrm_ray.data.records import find_files, get_field, iter_records
from hrm_ray.data.sources import ExtractOptions, clean_text, extract_document, find_pair
from hrm_ray.data.split import split_of
from hrm_ray.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, save_tokenizer, train_tokenizer
from hrm_ray.data.triplets import TripletConfig, continuation_triplets, prompt_response_triplet
from hrm_ray.errors import UserError

pytestmark = pytest.mark.timeout(60)


def test_every_format_reads(tmp_path):
    rows = [{"text": "alpha"}, {"text": "beta"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    with pa.OSFile(str(tmp_path / "b.arrow"), "wb") as sink, pa.ipc.new_stream(sink, pa.schema([("text", pa.string())])) as w:
        w.write_table(pa.Table.from_pylist(rows))
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "e.json").write_text(json.dumps(rows))
    (tmp_path / "f.txt").write_text("line one\n    indented\n")
    (tmp_path / "ignored.csv").write_text("x\n")
    files = find_files([str(tmp_path)])
    assert [prefix for _, prefix in files] == ["a.parquet", "b.arrow", "c.jsonl", "d.jsonl.gz", "e.json", "f.txt"]
    for path, prefix in files[:-1]:
        assert [r["text"] for r in iter_records(path)] == ["alpha", "beta"], prefix
    assert list(iter_records(files[-1][0])) == [{"text": "line one\n    indented\n"}]
    assert len(find_files([str(tmp_path)], max_files=2)) == 2


def test_bad_inputs_name_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(UserError, match=r"bad.jsonl: line 2: invalid JSON"):
        list(iter_records(bad))
    with pytest.raises(UserError, match="--source not found"):
        find_files([str(tmp_path / "missing")])


def test_squad_nested_json_flattens(tmp_path):
    squad = {"data": [{"title": "T", "paragraphs": [{"context": "C1", "qas": [
        {"id": "q1", "question": "Q1?", "answers": [{"text": "A1", "answer_start": 0}]},
        {"id": "q2", "question": "Q2?", "answers": [{"text": "A2", "answer_start": 3}]}]}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    records = list(iter_records(path))
    assert [r["question"] for r in records] == ["Q1?", "Q2?"]
    assert get_field(records[1], "answers.text[0]") == "A2"
    assert records[0]["context"] == "C1"


def test_field_paths_and_errors():
    record = {"data": {"answers": {"text": ["x", "y"]}, "q": "why"}}
    assert get_field(record, "data.answers.text[1]") == "y"
    with pytest.raises(KeyError, match=r"field 'data.answers.text\[5\]' not found"):
        get_field(record, "data.answers.text[5]")
    with pytest.raises(KeyError, match=r"field 'data.nope' not found"):
        get_field(record, "data.nope")
    with pytest.raises(UserError, match="invalid field path"):
        get_field(record, "data..q")


def test_pairs_in_every_layout():
    assert find_pair({"prompt": "p", "response": "r"}) == ("p", "r")
    assert find_pair({"question": "q", "answer": "a"}) == ("q", "a")
    assert find_pair({"instruction": "do", "input": "this", "output": "done"}) == ("do\n\nthis", "done")
    assert find_pair({"instruction": "do", "input": "", "output": "done"}) == ("do", "done")
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert find_pair({"messages": chat}) == ("hi", "hello")
    sharegpt = [{"from": "system", "value": "be nice"}, {"from": "human", "value": "hi"},
                {"from": "gpt", "value": "hello"}]
    assert find_pair({"conversations": sharegpt}) == ("system: be nice\nuser: hi", "hello")
    assert find_pair({"text": "plain"}) is None


def test_extract_keeps_indentation_and_counts_drops():
    opts = ExtractOptions(mode="auto", language="en")
    doc = extract_document({"text": "def f():\r\n    return 1   \n\n", "language": "en"}, "x:0", opts)
    assert doc["status"] == "ok" and doc["text"] == "def f():\n    return 1"
    assert extract_document({"text": "bonjour", "language": "fr"}, "x:1", opts)["status"] == "language"
    assert extract_document({"text": " \n "}, "x:2", opts)["status"] == "empty"
    assert extract_document({"title": "no text"}, "x:3", opts)["status"] == "no_text_field"
    pr = ExtractOptions(mode="prompt_response")
    assert extract_document({"text": "t"}, "x:4", pr)["status"] == "no_prompt_response_fields"
    assert clean_text("a\x00b\tc") == "ab\tc"


def test_continuation_target_never_in_encoder():
    cfg = TripletConfig.build(max_seq_len=16, encoder_len=6, decoder_len=4, bos_id=1, eos_id=2)
    ids = list(range(100, 123))  # 23 distinct tokens: windows of 10, last one 3
    triplets = continuation_triplets(cfg, ids)
    assert len(triplets) == 3
    seen = []
    for enc, dec, lab in triplets:
        assert dec[0] == 1 and lab[-1] == 2 and dec[1:] == lab[:-1]
        assert not set(enc) & set(lab[:-1]), "target tokens leaked into the encoder"
        assert max(enc) < min(lab[:-1]), "encoder must read only the context before the target"
        seen += enc + lab[:-1]
    assert seen == ids  # windows tile the document exactly
    assert triplets[-1][0] == [120] and triplets[-1][2] == [121, 122, 2]
    assert continuation_triplets(cfg, [5]) == []


def test_prompt_response_truncation():
    cfg = TripletConfig.build(max_seq_len=4, encoder_len=None, decoder_len=None, bos_id=1, eos_id=2)
    (enc, dec, lab), truncated = prompt_response_triplet(cfg, [10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24])
    assert truncated and enc == [12, 13, 14, 15] and dec == [1, 20, 21, 22] and lab == [20, 21, 22, 2]
    with pytest.raises(UserError, match="--decoder-len"):
        TripletConfig.build(8, 4, 8, 1, 2)


def test_split_is_deterministic_and_proportional():
    ids = [f"f.parquet:{i}" for i in range(4000)]
    first = [split_of(i, 0.1, 7) for i in ids]
    assert first == [split_of(i, 0.1, 7) for i in ids]
    assert 300 < first.count("val") < 500
    assert first != [split_of(i, 0.1, 8) for i in ids]
    assert all(split_of(i, 0.0, 7) == "train" for i in ids[:50])


def test_quotas_are_exact():
    props = proportions([0.9, 0.05, 0.05], ["a", "b", "c"])
    assert largest_remainder(101, props) == [91, 5, 5]
    assert sum(largest_remainder(997, proportions([3, 1, 1, 2], list("abcd")))) == 997
    assert largest_remainder(10, [1 / 3] * 3) == [4, 3, 3]
    assert max_total_without_reuse([100, 3], [0.5, 0.5]) == 6
    with pytest.raises(UserError, match="2 weights for 3 sources"):
        proportions([1, 2], ["a", "b", "c"])
    with pytest.raises(UserError, match="must be a finite number >= 0"):
        proportions([1, -1], ["a", "b"])
    with pytest.raises(UserError, match="all weights are zero"):
        proportions([0, 0], ["a", "b"])


def test_parse_dataset_spec():
    assert parse_dataset_spec("data/a:0.9,data/b:0.1") == [("data/a", 0.9), ("data/b", 0.1)]
    assert parse_dataset_spec("data/a") == [("data/a", 1.0)]
    assert parse_dataset_spec("s3://bucket/a") == [("s3://bucket/a", 1.0)]
    assert parse_dataset_spec("s3://b/a:2,s3://b/c:1") == [("s3://b/a", 2.0), ("s3://b/c", 1.0)]
    for spec, message in [("a:x,b:1", "weight 'x' of a is not a number"), ("a:1,b", "has no weight"),
                          ("a:-1,b:1", "must be >= 0"), ("a:0,b:0", "all weights are zero"),
                          ("a:1,a:2", "listed more than once"), ("a:1,,b:1", "empty entry")]:
        with pytest.raises(UserError, match=message):
            parse_dataset_spec(spec)


def test_tokenizer_roundtrip_and_specials(tmp_path):
    texts = ["def f(x):\n    return x  # spaced", "Hello, world! Ünïcödé ok."] * 20
    tok = train_tokenizer(texts, vocab_size=300, num_threads=1)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    for text in texts[:2] + ["  leading\n\n\ttabs and 日本語"]:
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids) == text
    sha = save_tokenizer(tok, tmp_path / "tokenizer.json")
    assert len(sha) == 64
    assert load_tokenizer(tmp_path).get_vocab_size() == tok.get_vocab_size()
    again = train_tokenizer(texts, vocab_size=300, num_threads=1)
    assert again.to_str() == tok.to_str()
    with pytest.raises(UserError, match="too small"):
        train_tokenizer(texts, vocab_size=100)


def test_collate_pads_to_lm_batch():
    batch = {
        "encoder_ids": np.array([np.array([5, 6, 7]), np.array([8])], dtype=object),
        "decoder_input_ids": np.array([np.array([1, 9]), np.array([1, 10, 11, 12])], dtype=object),
        "labels": np.array([np.array([9, 2]), np.array([10, 11, 12, 2])], dtype=object),
        "source_id": np.array([0, 1], dtype=np.int32),
    }
    out = collate_triplets(batch, pad_id=0)
    assert out["encoder_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert out["encoder_mask"].tolist() == [[True, True, True], [True, False, False]]
    assert out["decoder_input_ids"].tolist() == [[1, 9, 0, 0], [1, 10, 11, 12]]
    assert out["labels"].tolist() == [[9, 2, IGNORE_INDEX, IGNORE_INDEX], [10, 11, 12, 2]]
    assert out["decoder_mask"].tolist() == [[True, True, False, False], [True, True, True, True]]
    assert all(out[k].dtype == torch.long for k in ("encoder_ids", "decoder_input_ids", "labels", "source_id"))
    assert out["encoder_mask"].dtype == torch.bool
    capped = collate_triplets(batch, pad_id=0, max_seq_len=2)
    assert capped["encoder_ids"].tolist() == [[6, 7], [8, 0]]  # the encoder keeps the prompt's end
    assert capped["labels"].tolist() == [[9, 2], [10, 11]]


def test_work_units_cut_files_without_changing_records(tmp_path):
    from hrm_ray.data.work_units import WorkUnit, piece_record_batches, plan_units

    rows = [{"text": f"record {i} " + "x" * (i % 50)} for i in range(600)]
    lines = [json.dumps(r) for r in rows]
    for i in (5, 77, 300):
        lines.insert(i, "   ")  # blank lines count as lines, not records
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet", row_group_size=64)
    for i in range(6):
        (tmp_path / f"c{i}.jsonl").write_text(json.dumps({"text": f"small {i}"}) + "\n")
    files = find_files([str(tmp_path)])
    units = [WorkUnit.from_json(u.to_json()) for u in plan_units(files, unit_bytes=2000)]
    assert [u.index for u in units] == list(range(len(units)))
    by_file: dict[str, list] = {}
    for piece in (p for u in units for p in u.pieces):
        by_file.setdefault(piece.prefix, []).append(piece)
    for prefix in ("a.jsonl", "b.parquet"):
        assert len(by_file[prefix]) > 3, prefix  # large files are cut ...
        got = []
        for piece in by_file[prefix]:
            assert piece.first_record == len(got)  # ... and each piece knows its first record's number
            got += [r for batch in piece_record_batches(piece, 100) for r in batch]
        assert got == rows, prefix
    assert len(units[-1].pieces) > 1  # ... and small files are packed together
    assert len(plan_units(files, unit_bytes=2000, max_records=100)) < len(units)
    whole = plan_units(files, unit_bytes=1 << 30)
    assert len(whole) == 1 and [p.byte_range for p in whole[0].pieces] == [None] * 8


def test_a_broken_line_in_a_later_unit_names_its_line(tmp_path):
    from hrm_ray.data.work_units import piece_record_batches, plan_units

    lines = [json.dumps({"text": f"doc {i}"}) for i in range(500)]
    lines[401] = "{broken"
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    units = plan_units(find_files([str(tmp_path / "a.jsonl")]), unit_bytes=1000)
    with pytest.raises(UserError, match=r"a.jsonl: line 402: invalid JSON"):
        for piece in (p for u in units for p in u.pieces):
            list(piece_record_batches(piece, 64))
