"""A Ray Train run on a real multi-node Ray cluster on this machine: `ray.cluster_utils.Cluster`, one raylet
per node, 1 CPU each, all bound to 127.0.0.1. A driver holds one Ray connection (a test session's is taken),
so a test runs this in its own process:

    python tests/multinode_run.py [--head_cpus N] [--kill_after_step S] OUT.json -- TRAIN FLAGS...

It starts a cluster of three nodes, runs `hrm_ray.train.ray_trainer.train` of the flags with `--address`
of the cluster, writes {"result": the loop's result, "nodes": [the cluster's node ids], "killed": ...} to
OUT.json and shuts the cluster down. `--kill_after_step S`: once the run's metrics.jsonl has a training
step >= S, the node of the last rank in workers.json is removed (its raylet and workers killed: a node
loss); "killed" records its node id and the time. `local_cluster` is the cluster alone
(bench/bench_multinode.py, bench/bench_node_loss.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Ray resolves 127.0.0.1 in an address to the machine's outward IP, where a loopback-bound GCS does not
# answer; its single-machine mode (Windows/macOS's) keeps every address on loopback. Read when Ray is
# imported: set here, before any Ray import of this process (its nodes and workers inherit it).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's tests package
from tests.ray_heads import free_ports  # noqa: E402  (imports no Ray)

# The GCS marks a node dead after its health checks fail (Ray's defaults: about 30 s). Until then an elastic
# run counts the dead node's CPUs and waits for a worker group that cannot start (60 s by default). On one
# machine a lost raylet is certain at once, so the test cluster checks every 0.5 s.
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 500,
                   "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@contextlib.contextmanager
def local_cluster(nodes: int, head_cpus: int = 1):
    """A Ray cluster of `nodes` raylets (the head included; worker nodes of 1 CPU each) on loopback, shut down
    on exit; nothing is connected to it."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # its own (another Ray may use /tmp/ray); short paths
    # Nodes on real machines each have their own ports and disk. Here each node's dashboard agent gets a free
    # port (Ray's fixed default, 52365, is taken by the first node or by another Ray) and its own runtime-env
    # directory (else one node's cleanup deletes a job package another node's driver runs in).
    agent_ports = free_ports(nodes)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "node_ip_address": LOOPBACK, "_system_config": FAST_NODE_DEATH,
        "temp_dir": temp_dir, "dashboard_agent_listen_port": agent_ports[0]})
    try:
        for index in range(1, nodes):
            cluster.add_node(wait=False, num_cpus=1, node_ip_address=LOOPBACK,
                             dashboard_agent_listen_port=agent_ports[index],
                             runtime_env_dir_name=f"runtime_resources_node{index}")
        cluster.wait_for_nodes()
        yield cluster
    finally:
        disconnect()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def disconnect() -> None:
    """Leave the Ray this driver joined (the cluster shuts down after)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def node_ids(cluster) -> Iterator[str]:
    for node in cluster.list_all_nodes():
        yield node.node_id


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
    node = next(n for n in cluster.list_all_nodes() if n.node_id == node_id)
    killed.update(node_id=node_id, workers=workers, time=time.time(), at_step=last_step(run_dir))
    cluster.remove_node(node, allow_graceful=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("--head_cpus", type=int, default=1)
    parser.add_argument("--kill_after_step", type=int, default=0)
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    os.environ.pop("RAY_ADDRESS", None)  # never the caller's Ray
    from hrm_ray.config import build_config
    from hrm_ray.train.ray_trainer import train

    flags = [f for f in args.flags if f != "--"]
    with local_cluster(3, args.head_cpus) as cluster:
        cfg = build_config(None, [*flags, "--address", cluster.address])
        killed: dict = {}
        if args.kill_after_step:
            run_dir = Path(cfg.ray.storage_path, cfg.train.run_name)
            threading.Thread(target=kill_node_after, args=(cluster, run_dir, args.kill_after_step, killed),
                             daemon=True).start()
        result = train(cfg)
        record = {"result": vars(result), "nodes": list(node_ids(cluster)), "killed": killed}
    Path(args.out).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
