"""Checkpoint save and restore time for the default model (Config defaults, AdamW state filled), to local disk
and to an S3-compatible object store (a moto server on loopback, started here), side by side in one run.

    python bench/bench_checkpoint.py [--repeats 5] [--no-s3]

Save = building the state dict (model, optimizer, scheduler, scaler, RNG, data position) and
`CheckpointStore.save` (local: temp dir + rename; object store: written to a local temp dir, uploaded, meta.json
last); restore = `CheckpointStore.latest` (a copy from the store) + torch.load + load_state_dict into model and
optimizer. moto keeps objects in memory on this machine: the object-store figure is the upload/download path's
own cost, not a network's.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hrm_ray.config import Config
from hrm_ray.train.checkpoint import CheckpointStore, load_checkpoint, rng_state
from hrm_ray.train.lm_task import LanguageModelTask
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.task import WorkerContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-s3", dest="s3", action="store_false", help="local disk only")
    args = parser.parse_args()
    cfg = Config()
    cfg.train.batch_size = 8
    task = LanguageModelTask(resolve_config(cfg))
    model = task.build_model()
    optimizer = task.build_optimizers(model)[0]
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    feed = task.train_feed(WorkerContext())
    out = task.forward(model, feed.next_batch(), 0)
    out.loss.backward()
    optimizer.step()
    params = sum(p.numel() for p in model.parameters())

    def state(step: int) -> dict:
        return {"model": model.state_dict(), "optimizers": [optimizer.state_dict()], "scheduler": {},
                "scaler": scaler.state_dict(), "rng": rng_state(), "data_position": [feed.state_dict()],
                "step": step, "best_val_loss": 1.0, "evals_without_improvement": 0, "nonfinite_total": 0}

    def timed(run_dir: str) -> tuple[list[float], list[float]]:
        saves, loads = [], []
        store = CheckpointStore(run_dir, 0)
        for i in range(args.repeats):
            start = time.perf_counter()
            store.save(state(i), {"step": i, "final": False})
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded = load_checkpoint(store.latest())
            model.load_state_dict(loaded["model"])
            optimizer.load_state_dict(loaded["optimizers"][0])
            loads.append(time.perf_counter() - start)
        return saves, loads

    with tempfile.TemporaryDirectory() as tmp:
        results = {"local disk": timed(str(Path(tmp, "run")))}
        size = sum(f.stat().st_size for f in Path(tmp, "run", "checkpoint_00000000").iterdir())
        if args.s3:
            with moto_bucket() as bucket:
                results["object store (moto)"] = timed(f"{bucket}/run")
    print(f"default model: {params:,} parameters (d_model {cfg.model.d_model}), checkpoint {size / 2**20:.1f} MiB, "
          f"{args.repeats} runs each")
    for where, (saves, loads) in results.items():
        print(f"{where:22s} save median {1000 * statistics.median(saves):8.1f} ms   restore median "
              f"{1000 * statistics.median(loads):8.1f} ms")
    if len(results) == 2:
        (ls, ll), (rs, rl) = results.values()
        print(f"ratio store/local      save {statistics.median(rs) / statistics.median(ls):8.2f}x    restore "
              f"{statistics.median(rl) / statistics.median(ll):8.2f}x")


@contextlib.contextmanager
def moto_bucket():
    """A moto S3 server on a free loopback port with one bucket; its endpoint and test credentials in the
    environment (what hrm_ray.storage reads) while it runs."""
    import pyarrow.fs as pafs

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_REGION="us-east-1")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", allow_bucket_creation=True).create_dir("bench")
        yield "s3://bench"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
