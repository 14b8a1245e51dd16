"""A Ray Train run on a real multi-node Ray cluster on this machine: `ray start` raylets (tests/ray_heads.py: a
head and worker nodes of 1 CPU each, each its own ports, temp and runtime-env directories and process group, all
bound to 127.0.0.1). A driver holds one Ray connection (a test session's is taken), so a test runs this in its
own process:

    python tests/multinode_run.py [--head_cpus N] [--kill_after_step S] [--prepare SOURCE DEST] OUT.json -- FLAGS...

It starts a cluster of three nodes, runs `hrm_ray.train.ray_trainer.train` of the flags with `--address`
of the cluster, writes {"result": the loop's result, "nodes": [the cluster's node ids], "killed": ...,
"prepare": ...} to OUT.json and stops the cluster. `--prepare SOURCE DEST`: first a `data prepare` of SOURCE
into DEST (a bucket) on the cluster; "prepare" records the node of the actor that wrote each work unit. `--kill_after_step S`: once the run's metrics.jsonl has a training
step >= S, the node of the last rank in workers.json is killed (its `ray start`, raylet and workers, by their
process group: a node loss); "killed" records its node id and the time. `local_cluster` is the cluster alone
(bench/bench_multinode.py, bench/bench_node_loss.py, bench/bench_prepare_nodes.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Ray resolves 127.0.0.1 in an address to the machine's outward IP, where a loopback-bound GCS does not
# answer; its single-machine mode (Windows/macOS's) keeps every address on loopback. Read when Ray is
# imported: set here, before any Ray import of this process (its nodes and workers inherit it).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's tests package
from tests.ray_heads import (  # noqa: E402  (imports no Ray)
    FAST_NODE_DEATH,
    Head,
    add_worker_nodes,
    alive_nodes,
    kill_node,
    node_of,
    start_head,
    stop_head,
)


@dataclass
class LocalCluster:
    head: Head
    node_ids: list[str]  # the head's first

    @property
    def address(self) -> str:
        return self.head.gcs_address

    def kill(self, node_id: str) -> None:
        """Kill the worker node `node_id` (a node loss)."""
        nodes = dict(zip(self.node_ids[1:], self.head.workers, strict=True))
        kill_node(nodes[node_id])


@contextlib.contextmanager
def local_cluster(nodes: int, head_cpus: int = 1):
    """A Ray cluster of `nodes` raylets (the head included; worker nodes of 1 CPU each) on loopback, the worker
    nodes started together; stopped on exit by their process groups. Nothing is connected to it."""
    repo = Path(__file__).resolve().parents[1]
    head = start_head(repo, num_cpus=head_cpus, dashboard=True, system_config=FAST_NODE_DEATH)
    try:
        add_worker_nodes(head, repo, nodes - 1)
        alive_nodes(head, expect=nodes)
        yield LocalCluster(head, [node_of(head, node) for node in (head, *head.workers)])
    finally:
        disconnect()
        stop_head(head)


def disconnect() -> None:
    """Leave the Ray this driver joined (the cluster shuts down after)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def last_step(run_dir: Path) -> int:
    """The newest training step in the run's metrics.jsonl (0 before the first)."""
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [json.loads(line)["step"] for line in lines if '"split": "train"' in line]
    return max(steps, default=0)


def kill_node_after(cluster, run_dir: Path, step: int, killed: dict) -> None:
    """Wait for training step `step`, then remove the node of the last rank (a node loss)."""
    while last_step(run_dir) < step:
        time.sleep(0.05)
    workers = json.loads((run_dir / "workers.json").read_text())
    node_id = workers[-1]["node_id"]
    killed.update(node_id=node_id, workers=workers, time=time.time(), at_step=last_step(run_dir))
    cluster.kill(node_id)


def prepare_on(address: str, source: str, dest: str) -> dict:
    """`data prepare --dest DEST` of `source` on the cluster, small work units so that its 3 actors of 1 CPU (one a
    node) all get some: the node ids of the actors that wrote each unit's shards, and the report's notes."""
    from hrm_ray.data import prepare

    rows: list[dict] = []
    run_pipeline = prepare.run_pipeline
    prepare.run_pipeline = lambda ds, ours: rows.extend(run_pipeline(ds, ours)) or rows
    report = prepare.prepare_language_dataset(prepare.PrepareConfig(
        source=[source], dest=dest, vocab_size=300, max_seq_len=32, val_ratio=0.1, unit_bytes=2000,
        address=address))
    return {"unit_nodes": [r["node"] for r in rows], "notes": report.notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--head_cpus", type=int, default=1)
    parser.add_argument("--kill_after_step", type=int, default=0)
    parser.add_argument("--prepare", nargs=2, metavar=("SOURCE", "DEST"), help="first `data prepare` SOURCE into DEST")
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    os.environ.pop("RAY_ADDRESS", None)  # never the caller's Ray
    from hrm_ray.config import build_config
    from hrm_ray.train.ray_trainer import train

    flags = [f for f in args.flags if f != "--"]
    with local_cluster(3, args.head_cpus) as cluster:
        prepared = prepare_on(cluster.address, *args.prepare) if args.prepare else {}
        cfg = build_config(None, [*flags, "--address", cluster.address])
        killed: dict = {}
        if args.kill_after_step:
            run_dir = Path(cfg.ray.storage_path, cfg.train.run_name)
            threading.Thread(target=kill_node_after, args=(cluster, run_dir, args.kill_after_step, killed),
                             daemon=True).start()
        result = train(cfg)
        record = {"result": vars(result), "nodes": cluster.node_ids, "killed": killed, "prepare": prepared}
    Path(args.out).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
