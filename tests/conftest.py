"""Shared fixtures: one Ray session for the whole test run, and the slices of real data in tests/data."""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
# Ray Train's controller looks at its workers every 2 s (Ray's default): a run's start and end each wait for the
# next look. Tiny test runs take a few steps; every Ray process started from here (and the test clusters,
# tests/ray_heads.clean_env) inherits this.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and share a busy 2-core CI machine better)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Small slices of real data committed with the tests (tests/data/README.md names their sources)."""
    return REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session", autouse=True)
def test_storage(tmp_path_factory) -> Path:
    """The storage root of every run a test does not place itself ($HRM_RAY_STORAGE; never ~/hrm-ray/runs)."""
    root = tmp_path_factory.mktemp("storage")
    os.environ["HRM_RAY_STORAGE"] = str(root)
    return root


@pytest.fixture(scope="session")
def moto_endpoint():
    """An S3-compatible store for the session: `moto_server` on a free loopback port, stopped by its own
    process group at the end."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=10)


@pytest.fixture
def s3_bucket(moto_endpoint, monkeypatch, request) -> str:
    """A fresh bucket in the session's moto server, as `s3://NAME`, with the AWS variables set for this test
    (and for Ray workers started during it)."""
    import re

    import pyarrow.fs as pafs

    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    pafs.S3FileSystem(endpoint_override=moto_endpoint, region="us-east-1", allow_bucket_creation=True,
                      access_key="testing", secret_key="testing").create_dir(bucket)
    return f"s3://{bucket}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """The tests that start their own multi-node cluster (marked `cluster`) run first, and under xdist (`make
    test`: -n 2 --dist loadgroup) one after another on one worker: two clusters at once on 2 cores starve each
    other, and started first they overlap the rest of the suite on the other worker instead of ending it."""
    clusters = [item for item in items if item.get_closest_marker("cluster")]
    for item in clusters:
        item.add_marker(pytest.mark.xdist_group("clusters"))
    first = {id(item) for item in clusters}
    items[:] = clusters + [item for item in items if id(item) not in first]


@pytest.fixture(autouse=True)
def _cpus_of_earlier_failed_jobs():
    """Before each test, the CPUs that earlier tests' failed Ray Data jobs still hold are freed. pytest keeps a
    test's log records and exceptions, and Ray Data logs an actor's error with a traceback whose frames refer to
    the actor: once the test is over they are garbage, in reference cycles that only the collector frees (a
    user's driver frees them at once: tests/test_faults_data.py)."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        if ray.available_resources().get("CPU", 0.0) < ray.cluster_resources().get("CPU", 0.0):
            gc.collect()
    yield


@pytest.fixture(scope="session")
def ray_session():
    """A single local Ray instance shared by every test that needs Ray: 2 CPUs, a 2-core user's machine,
    so that every run and the sweep are planned against what such a machine has (a plan that asked for
    more would hang or fail here)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    gc.collect()  # finish abandoned Ray Data iterators while Ray is still up
    ray.shutdown()
