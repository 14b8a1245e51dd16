"""A test's own `ray start --head`, as a user or a neighbour would run one: bound to loopback, free ports
for every Ray port, its own temp dir, in its own process group. Stopped by that group, never by
`ray stop`, which would take down every Ray instance on the machine."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
# The fake multi-node provider's switch; the autoscaler's update every second (Ray's default: 5 s); and
# Ray's single-machine mode, which puts the nodes the autoscaler launches on loopback (else on the machine's
# outward IP: the provider gives them no address and Ray resolves one).
FAKE_AUTOSCALER_ENV = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# The GCS marks a node dead after its health checks fail (Ray's defaults: about 30 s). Until then a run counts
# the dead node's CPUs and the autoscaler hears of it. On one machine a lost raylet is certain at once, so a
# test cluster that loses nodes checks every 0.5 s.
FAST_NODE_DEATH = {"health_check_initial_delay_ms": 1000, "health_check_period_ms": 500,
                   "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
HEAD_ONLY_PORTS = ("--port", "--dashboard-port", "--ray-client-server-port")
PORT_FLAGS = ("--port", "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--metrics-export-port", "--runtime-env-agent-port", "--ray-client-server-port",
              "--node-manager-port", "--object-manager-port")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment for a child process that must not attach to the test session's Ray."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class Head:
    proc: subprocess.Popen
    temp_dir: str
    ports: dict[str, int]
    workers: list[Head] = field(default_factory=list)  # worker nodes joined to this head

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['--dashboard-port']}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports['--port']}"


def _ready(head: Head, dashboard: bool) -> bool:
    if not dashboard:
        return bool(list(Path(head.temp_dir).glob("session_*/logs/raylet.out")))
    try:
        with urllib.request.urlopen(f"{head.dashboard_url}/api/version", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _launch(cwd: Path, num_cpus: int, dashboard: bool, head_address: str = "", autoscaling: dict | None = None,
            system_config: dict | None = None) -> Head:
    """A head, or with `head_address` a worker node joining that head (its own ports and temp dir); with
    `autoscaling` (a fake_multinode config, tests.autoscaling_cluster) a head whose autoscaler launches nodes;
    `system_config`: the cluster's Ray system settings (a head's)."""
    flags = PORT_FLAGS if not head_address else tuple(f for f in PORT_FLAGS if f not in HEAD_ONLY_PORTS)
    ports = dict(zip(flags, free_ports(len(flags) + 1), strict=False))
    workers = max(ports.values()) + 1000 if max(ports.values()) < 60000 else 20000
    temp_dir = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths have a length limit
    argv = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(num_cpus), "--num-gpus", "0", "--temp-dir", temp_dir, "--disable-usage-stats",
            "--min-worker-port", str(workers), "--max-worker-port", str(workers + 100)]
    if head_address:
        argv += ["--address", head_address]
    else:
        argv += ["--head", "--include-dashboard", "true" if dashboard else "false", "--dashboard-host", "127.0.0.1"]
        if system_config:
            argv += ["--system-config", json.dumps(system_config)]
    argv += [x for flag, port in ports.items() for x in (flag, str(port))]
    env = clean_env()
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # a driver's switch (to reach loopback): `ray start --address` refuses it
    if autoscaling is not None:
        argv += ["--autoscaling-config", _write_autoscaling_config(autoscaling, temp_dir, ports["--port"])]
        env.update(FAKE_AUTOSCALER_ENV)
    log = open(Path(temp_dir, "ray-start.log"), "wb")  # noqa: SIM115 - closed with the head's directory
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return Head(proc, temp_dir, ports)


def _write_autoscaling_config(config: dict, temp_dir: str, gcs_port: int) -> str:
    import yaml

    config = {**config, "provider": {**config["provider"], "gcs_address": f"127.0.0.1:{gcs_port}"}}
    path = Path(temp_dir, "autoscaling.yaml")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def start_head(cwd: Path, num_cpus: int = 1, dashboard: bool = False, timeout_s: float = 120,
               attempts: int = 2, autoscaling: dict | None = None, system_config: dict | None = None) -> Head:
    """A running head; a start that fails at once (a port taken in between) is tried again on new ports.
    `autoscaling`: a fake_multinode config (tests.autoscaling_cluster); its autoscaler launches worker nodes
    (raylets of this machine, in the head's process group and temp dir) as jobs ask for them."""
    for attempt in range(attempts):
        head = _launch(cwd, num_cpus, dashboard, autoscaling=autoscaling, system_config=system_config)
        deadline = time.monotonic() + timeout_s
        while head.proc.poll() is None and not _ready(head, dashboard) and time.monotonic() < deadline:
            time.sleep(0.5)
        if head.proc.poll() is None and _ready(head, dashboard):
            return head
        output = Path(head.temp_dir, "ray-start.log").read_text(errors="replace")[-3000:]
        stop_head(head)
        if attempt == attempts - 1:
            raise RuntimeError(f"ray start --head did not come up (exit {head.proc.returncode}):\n{output}")
    raise AssertionError("unreachable")


def add_worker_nodes(head: Head, cwd: Path, count: int, num_cpus: int = 1) -> None:
    """`count` worker nodes (each its own raylet, `ray start --address`) joining `head`, started without
    waiting (`alive_nodes` waits for them); stopped with the head."""
    for _ in range(count):
        head.workers.append(_launch(cwd, num_cpus, dashboard=False, head_address=head.gcs_address))


def _alive_raylets(head: Head) -> list[dict]:
    """The raylet records of the cluster's alive nodes, from the head's dashboard."""
    with urllib.request.urlopen(f"{head.dashboard_url}/nodes?view=summary", timeout=10) as response:
        summary = json.load(response)["data"]["summary"]
    return [n["raylet"] for n in summary if n["raylet"]["state"] == "ALIVE"]


def alive_nodes(head: Head, expect: int, timeout_s: float = 60) -> list[str]:
    """The ids of the cluster's alive nodes (from the head's dashboard), once there are `expect` of them."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [raylet["nodeId"] for raylet in _alive_raylets(head)]
        if len(alive) >= expect or time.monotonic() > deadline:
            logs = [Path(n.temp_dir, "ray-start.log").read_text(errors="replace")[-1500:] for n in head.workers]
            assert len(alive) == expect, f"{len(alive)} of {expect} nodes alive; worker nodes' logs: {logs}"
            return alive
        time.sleep(0.5)


def node_of(head: Head, node: Head) -> str:
    """The node id of `node` (the head or one of its worker nodes), found by its raylet's port."""
    port = node.ports["--node-manager-port"]
    return next(r["nodeId"] for r in _alive_raylets(head) if r["nodeManagerPort"] == port)


def kill_node(node: Head) -> None:
    """A node lost as a preempted machine is: its `ray start` and every Ray process of it killed at once."""
    os.killpg(node.proc.pid, signal.SIGKILL)
    node.proc.wait(timeout=10)


def kill_launched_node(head: Head, node_id: str) -> list[int]:
    """A node the autoscaler launched, lost as a preempted machine is: its raylet (the fake provider's node id
    in its environment) and every process under it (its workers and agents) killed at once. The pids."""
    marker = f"RAY_OVERRIDE_NODE_ID_FOR_TESTING={node_id}".encode()
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(proc.name)] = int(Path(proc, "stat").read_text().rsplit(")", 1)[1].split()[1])
    doomed = set()
    for pid in processes_of(head):
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                doomed.add(pid)
    while grown := {pid for pid, parent in parents.items() if parent in doomed} - doomed:
        doomed |= grown
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return sorted(doomed)


def stop_head(head: Head) -> None:
    """SIGTERM to our `ray start --block` processes (each shuts its node's Ray processes down; its worker
    nodes and the head at once), then SIGKILL to their process groups."""
    nodes = [*head.workers, head]
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 8  # test nodes: what has not stopped by then is killed with its group
    for node in nodes:
        try:
            node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for node in nodes:
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)  # the session we started for it, and nothing else
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=10)
        shutil.rmtree(node.temp_dir, ignore_errors=True)


def autoscaler_log(head: Head) -> str:
    """The head's autoscaler log (monitor.log: its decisions, status and event summaries)."""
    logs = {path.resolve() for path in Path(head.temp_dir).glob("session_*/logs/monitor.log")}  # session_latest too
    return "".join(path.read_text(errors="replace") for path in sorted(logs))


def processes_of(head: Head) -> list[int]:
    """The live processes started for `head` (its temp dir on their command line): after `stop_head`, none."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and head.temp_dir.encode() in Path(proc, "cmdline").read_bytes():
                state = Path(proc, "stat").read_text().rsplit(")", 1)[1].split()[0]
                pids += [int(proc.name)] * (state != "Z")
        except OSError:
            continue
    return pids

