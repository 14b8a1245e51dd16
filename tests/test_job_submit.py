"""`ray job submit` of Stage B against a head node this test starts on loopback, as a user would:

    ray start --head --dashboard-host 127.0.0.1 ...      (its own ports and temp dir)
    ray job submit --address http://127.0.0.1:<dashboard> --working-dir . --no-wait -- \
        python experiments/stage_b.py --profile demo --steps 4 ...
    ray job logs --follow ...; ray job status ...

The job builds the demo data itself (demo_data/ is git-ignored, so it is not uploaded) and writes its
run to a temporary storage path. The head node is stopped by its own process id, never with
`ray stop`, which would take down every Ray instance on the machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the dashboard at {url} did not come up in {timeout_s}s")


def stop_head(head: subprocess.Popen) -> None:
    """SIGTERM to our `ray start --block` (it shuts its Ray processes down), then its process group."""
    if head.poll() is None:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # the session we started for it, and nothing else
    except ProcessLookupError:
        pass
    head.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_stage_b_through_ray_job_submit_to_a_local_head_node(tmp_path):
    gcs, dashboard, client, agent = free_ports(4)
    temp_dir = tempfile.mkdtemp(prefix="rjs-", dir="/tmp")  # short: Ray's socket paths have a length limit
    storage = tmp_path / "runs"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled",
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(gcs), "--num-cpus", "4", "--num-gpus", "0",
         "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent),
         "--temp-dir", temp_dir, "--disable-usage-stats"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(address, head)
        ray = [str(BIN / "ray"), "job"]
        submit = subprocess.run(
            [*ray, "submit", "--address", address, "--working-dir", ".", "--submission-id", "stage-b-demo",
             "--no-wait", "--", "python", "experiments/stage_b.py", "--profile", "demo", "--steps", "4",
             "--val_every", "2", "--log_steps", "2", "--batch_size", "8", "--max_val_samples", "32",
             "--cpus_per_worker", "1", "--init_from=", "--save_dir", str(storage)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert submit.returncode == 0, submit.stdout + submit.stderr
        logs = subprocess.run([*ray, "logs", "--address", address, "--follow", "stage-b-demo"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=360)
        status = subprocess.run([*ray, "status", "--address", address, "stage-b-demo"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert "succeeded" in status.stdout.lower(), logs.stdout[-4000:] + status.stdout + status.stderr
        assert "building demo data" in logs.stdout  # the job built its own data
        assert "run 'demo-stage-b' finished at step 4/4" in logs.stdout
        run_dir = storage / "demo-stage-b"
        checkpoint = run_dir / "checkpoint_00000004"
        assert (checkpoint / "state.pt").is_file() and (checkpoint / "meta.json").is_file()
        assert (run_dir / "best-model" / "model.pt").is_file() and (run_dir / "metrics.jsonl").is_file()
    finally:
        stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
