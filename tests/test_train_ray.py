"""Ray Train runs: 2 CPU workers over gloo on a prepared dataset, on two nodes of a 3-node cluster; a worker
killed mid-run; on-the-fly mixing of prepared datasets with the realised proportions logged."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tests.test_train_loop as toys
from hrm_ray.config import build_config
from hrm_ray.data.synthetic import arithmetic_pairs, char_tokenizer, make_triplets
from hrm_ray.train.checkpoint import CheckpointStore, load_checkpoint, read_meta
from hrm_ray.train.ray_trainer import train
from tests.ray_heads import clean_env

MULTINODE = Path(__file__).with_name("multinode_run.py")

TINY = ["--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1",
        "--wandb", "off", "--max_seq_len", "32", "--log_steps", "2"]


def make_prepared(root: Path, name: str, train_rows: int, val_rows: int, offset: int = 0) -> Path:
    """A prepared dataset as the data jobs write it: train/ and val/ Parquet, tokenizer.json, meta.json."""
    tok = char_tokenizer()
    path = root / name
    for split, n in (("train", train_rows), ("val", val_rows)):
        pairs = arithmetic_pairs("train" if split == "train" else "val", n + offset, 99, seed=0)[offset:]
        rows = make_triplets(pairs, tok, 32)
        table = pa.table({k: pa.array([r[k] for r in rows], pa.list_(pa.int32()))
                          for k in ("encoder_ids", "decoder_input_ids", "labels")})
        (path / split).mkdir(parents=True)
        pq.write_table(table, path / split / "part-00000.parquet")
    tok.save(str(path / "tokenizer.json"))
    meta = {"vocab_size": tok.get_vocab_size(), "pad_id": 0, "bos_id": 1, "eos_id": 2, "max_seq_len": 32,
            "train_samples": train_rows, "val_samples": val_rows, "tokenizer_sha256": "char-v1"}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_on_three_nodes(tmp_path: Path, flags: list[str], timeout: float = 240) -> dict:
    """tests/multinode_run.py in its own process and process group (killed whole on a timeout): the run of
    `flags` on a 3-node Ray cluster of 1 CPU each; what it wrote."""
    out = tmp_path / "multinode.json"
    proc = subprocess.Popen([sys.executable, str(MULTINODE), str(out), "--", *flags],
                            env=clean_env(), start_new_session=True)
    try:
        assert proc.wait(timeout=timeout) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return json.loads(out.read_text())


@pytest.mark.timeout(300)
def test_two_cpu_workers_on_two_nodes_of_a_cluster(tmp_path):
    data = make_prepared(tmp_path, "arith", 256, 32)
    record = run_on_three_nodes(tmp_path, [
        *TINY, "--dataset", str(data), "--num_workers", "2", "--cpus_per_worker", "1", "--placement_strategy",
        "SPREAD", "--batch_size", "8", "--steps", "6", "--val_every", "3", "--warmup_steps", "1",
        "--save_dir", str(tmp_path / "runs"), "--run_name", "ddp", "--checkpoint_limit", "1"])
    result, run_dir = record["result"], tmp_path / "runs" / "ddp"
    assert result["step"] == 6 and math.isfinite(result["best_val_loss"])
    workers = json.loads((run_dir / "workers.json").read_text())
    assert [w["rank"] for w in workers] == [0, 1] and all(w["hostname"] for w in workers)
    nodes = [w["node_id"] for w in workers]
    assert len(set(nodes)) == 2 and set(nodes) <= set(record["nodes"])  # SPREAD: one rank per node
    assert [p.name for p in CheckpointStore(run_dir, 0).checkpoints()] == ["checkpoint_00000006"]
    state = load_checkpoint(run_dir / "checkpoint_00000006")
    assert state["step"] == 6 and len(state["data_position"]) == 2  # one data position per worker
    assert not any(k.startswith("module.") for k in state["model"])  # same format as a local run
    assert read_meta(run_dir / "checkpoint_00000006")["final"] is True
    losses = [r["loss"] for r in records(run_dir) if r["split"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(x) and 0 < x < 10 for x in losses)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "best-model" / "model.pt").is_file()


@pytest.mark.timeout(400)
def test_killed_worker_restarts_from_last_checkpoint(ray_session, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(toys)
    cfg = toys.toy_cfg(tmp_path / "runs", "--steps", "12", "--num_workers", "2", "--cpus_per_worker", "1",
                       "--max_failures", "1", "--run_name", "killed")
    task = toys.ToyTask(cfg, marker=str(tmp_path / "killed-once"), exit_at=7)
    result = train(cfg, task)
    run_dir = tmp_path / "runs" / "killed"
    assert (tmp_path / "killed-once").exists()  # one worker process did exit mid-run
    assert result.step == 12 and not result.already_done
    train_steps = [r["step"] for r in records(run_dir) if r["split"] == "train"]
    # steps 1..7 before the kill (step 8's update never finished), then 6..12 again from checkpoint 5
    assert train_steps[:7] == list(range(1, 8)) and train_steps[7:] == list(range(6, 13))
    assert read_meta(CheckpointStore(run_dir, 0).latest())["step"] == 12


@pytest.mark.timeout(300)
def test_mixture_of_prepared_datasets_logs_realised_proportions(ray_session, tmp_path):
    a = make_prepared(tmp_path, "A", 90, 10)
    b = make_prepared(tmp_path, "B", 10, 10, offset=100)
    cfg = build_config(None, [*TINY, "--dataset", f"{a}:0.9,{b}:0.1", "--num_workers", "0",
                              "--batch_size", "10", "--steps", "10", "--log_steps", "10", "--val_every", "10",
                              "--save_dir", str(tmp_path / "runs"), "--run_name", "mix"])
    result = train(cfg)
    assert result.step == 10
    last = [r for r in records(tmp_path / "runs" / "mix") if r["split"] == "train"][-1]
    assert last["mix_A"] == pytest.approx(0.9) and last["mix_B"] == pytest.approx(0.1)
