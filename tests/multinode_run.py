"""A Ray Train run on a real multi-node Ray cluster on this machine: `ray.cluster_utils.Cluster`, one raylet
per node, 1 CPU each, all bound to 127.0.0.1. A driver holds one Ray connection (a test session's is taken),
so a test runs this in its own process:

    python tests/multinode_run.py OUT.json -- TRAIN FLAGS...

It starts a cluster of three nodes, runs `hrm_ray.train.ray_trainer.train` of the flags with `--address`
of the cluster, writes {"result": the loop's result, "nodes": [the cluster's node ids]} to OUT.json and
shuts the cluster down. `local_cluster` is the cluster alone (bench/bench_multinode.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Ray resolves 127.0.0.1 in an address to the machine's outward IP, where a loopback-bound GCS does not
# answer; its single-machine mode (Windows/macOS's) keeps every address on loopback. Read when Ray is
# imported: set here, before any Ray import of this process (its nodes and workers inherit it).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@contextlib.contextmanager
def local_cluster(nodes: int):
    """A Ray cluster of `nodes` raylets (the head included) of 1 CPU each on loopback, shut down on exit;
    nothing is connected to it."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": LOOPBACK})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(wait=False, num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        disconnect()
        cluster.shutdown()


def disconnect() -> None:
    """Leave the Ray this driver joined (the cluster shuts down after)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def node_ids(cluster) -> Iterator[str]:
    for node in cluster.list_all_nodes():
        yield node.node_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out")
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    os.environ.pop("RAY_ADDRESS", None)  # never the caller's Ray
    from hrm_ray.config import build_config
    from hrm_ray.train.ray_trainer import train

    flags = [f for f in args.flags if f != "--"]
    with local_cluster(3) as cluster:
        result = train(build_config(None, [*flags, "--address", cluster.address]))
        record = {"result": vars(result), "nodes": list(node_ids(cluster))}
    Path(args.out).write_text(json.dumps(record))


if __name__ == "__main__":
    main()
