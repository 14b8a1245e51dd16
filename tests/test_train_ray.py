"""Ray Train runs: an elastic group of 2 CPU workers over gloo on two nodes of a 3-node cluster that loses a
node mid-run and goes on with one (step for step the losses of one process with the same global batch);
on-the-fly mixing of prepared datasets with the realised proportions logged."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hrm_ray.config import build_config
from hrm_ray.data.synthetic import arithmetic_pairs, char_tokenizer, make_triplets
from hrm_ray.train.checkpoint import CheckpointStore, load_checkpoint
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


@contextlib.contextmanager
def on_three_nodes(tmp_path: Path, flags: list[str], timeout: float = 240, options: tuple[str, ...] = ()):
    """tests/multinode_run.py in its own process and process group (killed whole on a timeout), started on
    entry: the run of `flags` on a 3-node Ray cluster. Yields a function that waits for it and returns what it
    wrote (the caller works meanwhile); its console goes to tmp_path/console.txt."""
    out = tmp_path / "multinode.json"
    with open(tmp_path / "console.txt", "wb") as console:
        proc = subprocess.Popen([sys.executable, str(MULTINODE), *options, str(out), "--", *flags],
                                env=clean_env(), start_new_session=True, stdout=console, stderr=subprocess.STDOUT)

    def result() -> dict:
        assert proc.wait(timeout=timeout) == 0
        return json.loads(out.read_text())
    try:
        yield result
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def step_losses(run_dir: Path) -> dict[int, float]:
    """Each training step's loss; a step trained again after a restart counts as last logged."""
    return {r["step"]: r["loss"] for r in records(run_dir) if r["split"] == "train"}


# A node lost after step 5 leaves 19 steps (about 1 s) for the run to notice it before it would finish.
ELASTIC = [*TINY, "--dropout", "0", "--batch_size", "8", "--steps", "24", "--val_every", "4", "--log_steps", "1",
           "--warmup_steps", "1", "--max_val_samples", "16", "--checkpoint_limit", "2"]


@pytest.mark.cluster
@pytest.mark.timeout(420)
def test_elastic_run_loses_a_node_and_matches_one_worker_step_for_step(tmp_path):
    """Two workers on two nodes of a 3-node cluster, `--num_workers 1-2`; a worker node is removed mid-run: the
    run goes on with one worker from its last checkpoint and reaches --steps. The global batch (2 x 8) is the
    same throughout, so every step's loss equals, within 1e-4, that of one process accumulating two
    micro-batches of 8, before the loss (2 workers) and after it (1 worker), and both end at the same sample."""
    elastic = [*ELASTIC, "--num_workers", "1-2", "--cpus_per_worker", "1", "--placement_strategy", "SPREAD",
               "--max_failures", "2", "--group_start_timeout_s", "3", "--save_dir", str(tmp_path / "runs"),
               "--run_name", "elastic"]
    with on_three_nodes(tmp_path, elastic, options=("--head_cpus", "0", "--kill_after_step", "5")) as result:
        reference = train(build_config(None, [*ELASTIC, "--num_workers", "0", "--grad_accum_steps", "2",  # meanwhile
                                              "--save_dir", str(tmp_path / "ref"), "--run_name", "ref"]))
        assert reference.step == 24
        record = result()
    run_dir, killed = tmp_path / "runs" / "elastic", record["killed"]
    assert record["result"]["step"] == 24 and killed, record
    before = killed["workers"]
    assert [w["rank"] for w in before] == [0, 1] and len({w["node_id"] for w in before}) == 2  # SPREAD
    after = json.loads((run_dir / "workers.json").read_text())
    assert len(after) == 1 and after[0]["node_id"] != killed["node_id"]  # the nodes left
    assert killed["at_step"] < 24  # the node died mid-run
    expected, got = step_losses(tmp_path / "ref" / "ref"), step_losses(run_dir)
    assert sorted(got) == sorted(expected) == list(range(1, 25))
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, rel=1e-4), f"step {step}"
    final = load_checkpoint(CheckpointStore(run_dir, 0).latest())
    assert final["step"] == 24
    assert final["data_position"] == load_checkpoint(CheckpointStore(tmp_path / "ref" / "ref", 0).latest())["data_position"]
    assert not any(k.startswith("module.") for k in final["model"])  # same format as a local run
    assert (run_dir / "config.yaml").is_file() and (run_dir / "best-model" / "model.safetensors").is_file()
    console = (tmp_path / "console.txt").read_text()  # what the user saw: the restart, none of Ray's own notices
    assert "the worker group now has 1 worker(s), the checkpoint's had 2" in console and "val @ step 24" in console
    assert "Traceback" not in console and "(raylet)" not in console and "TrainController" not in console, console


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
