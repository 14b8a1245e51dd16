"""`data prepare --dest s3://...` on 1 node vs 3 nodes, into an S3-compatible bucket (moto): tokens/s of the same
source, each run on its own real Ray cluster of 1-CPU nodes on loopback (tests/multinode_run.py), side by side.

    python bench/bench_prepare_nodes.py [--pairs 300]

Every actor uploads its units' shards to the bucket itself and the driver writes meta.json last; no node
needs a shared $TMPDIR. The nodes share this machine's cores, so the ratio shows the overhead of spreading
the actors over raylets, not real scaling. Each run trains its tokenizer (the same one: deterministic).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from tests.multinode_run import disconnect, local_cluster  # noqa: E402  (before any Ray import: Ray on loopback)

BUCKET = "bench-prepare-nodes"


def moto_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto_server did not start")


def prepare_on(nodes: int, source: Path, unit_bytes: int) -> tuple[int, float, str]:
    """(tokens, seconds, the report's node note) of one prepare on a fresh cluster of `nodes` nodes."""
    import ray

    from hrm_ray.data.prepare import PrepareConfig, prepare_language_dataset

    with local_cluster(nodes) as cluster:
        ray.init(address=cluster.address, log_to_driver=False)
        report = prepare_language_dataset(PrepareConfig(
            source=[str(source)], dest=f"s3://{BUCKET}/nodes-{nodes}", vocab_size=1000, max_seq_len=64,
            val_ratio=0.1, tokenizer_workers=nodes, unit_bytes=unit_bytes))
        disconnect()
    return report.tokens, report.seconds, "; ".join(report.notes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300, help="source lines: pairs x pairs question/answer pairs")
    args = parser.parse_args()
    server, endpoint = moto_server()
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"})
    try:
        import pyarrow.fs as pafs

        pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1", allow_bucket_creation=True).create_dir(BUCKET)
        source = Path(tempfile.mkdtemp(prefix="bench-prepare-")) / "pairs.jsonl"
        source.write_text("".join(json.dumps({"prompt": f"What is {a} plus {b}?", "response": f"It is {a + b}."})
                                  + "\n" for a in range(args.pairs) for b in range(args.pairs)))
        unit_bytes = max(1, source.stat().st_size // 12)  # 12 work units
        rates = {}
        for nodes in (1, 3):
            tokens, seconds, note = prepare_on(nodes, source, unit_bytes)
            rates[nodes] = tokens / seconds
            print(f"{nodes} node(s): {tokens} tokens in {seconds:.1f}s = {rates[nodes]:,.0f} tokens/s"
                  f"{'; ' + note if note else ''}", flush=True)
        print(f"3 nodes / 1 node: {rates[3] / rates[1]:.2f}x (one machine's cores shared: overhead, not scaling)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
