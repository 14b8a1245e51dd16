"""Our cluster YAMLs under Ray's real autoscaler: the fake multi-node provider launches raylets on this machine
for the node types generated from clusters/*.yaml (tests.autoscaling_cluster), on a head with no CPUs and no
worker nodes. Every test reads the autoscaler's own log as evidence. One head for the module; drivers run in
their own processes (the test session's Ray connection is taken)."""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from hrm_ray import storage as storage_lib
from tests.autoscaling_cluster import (
    FAKE_GPU,
    autoscaler_view,
    fake_config,
    marker_resource,
    type_name,
    worker_types,
)
from tests.ray_heads import (
    FAST_NODE_DEATH,
    autoscaler_log,
    clean_env,
    kill_launched_node,
    processes_of,
    start_head,
    stop_head,
)

REPO = Path(__file__).resolve().parents[1]
YAMLS = [REPO / "clusters" / name for name in ("aws-gpu.yaml", "gcp-gpu.yaml", "local.yaml",
                                               "kuberay/raycluster.yaml", "kuberay/rayjob-stage-b.yaml")]
pytestmark = [pytest.mark.timeout(120), pytest.mark.cluster]


@pytest.fixture(scope="module")
def cluster():
    config = fake_config(YAMLS, marker=True)
    head = start_head(REPO, num_cpus=0, autoscaling=config, system_config=FAST_NODE_DEATH)
    yield head, config
    stop_head(head)
    assert processes_of(head) == [], "processes of the autoscaling cluster outlived it"


def drive(head, script: str, timeout_s: float = 90) -> dict:
    """Run `script` as a Ray driver of the autoscaling cluster; the JSON it prints last."""
    prelude = f"import json, os, time, ray\nray.init(address={head.gcs_address!r}, log_to_driver=False)\n"
    env = clean_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    done = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for(condition, what: str, timeout_s: float = 60) -> None:
    """Poll `condition` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s"
        time.sleep(0.2)


def wait_for_log(head, pattern: str, count: int = 1, after: int = 0, timeout_s: float = 60) -> list[str]:
    """The autoscaler log's lines (past offset `after`) matching `pattern`, once there are `count`."""
    def lines() -> list[str]:
        return [line for line in autoscaler_log(head)[after:].splitlines() if re.search(pattern, line)]

    wait_for(lambda: len(lines()) >= count, f"{count} lines /{pattern}/ in the autoscaler log", timeout_s)
    return lines()


def demand(path: Path, name: str, config: dict) -> dict:
    """The resources of one whole node of type `name` from the YAML at `path`, as a task's request."""
    spec = config["available_node_types"][name]["resources"]
    return {key: value for key, value in spec.items() if key not in ("object_store_memory",)} | {
        marker_resource(path): 1}


def test_generated_config_keeps_every_yaml_node_type(cluster) -> None:
    from ray.autoscaler._private.util import validate_config

    _, config = cluster
    validate_config(config)
    for path in YAMLS:
        for name, spec in worker_types(autoscaler_view(path)).items():
            generated = config["available_node_types"][type_name(config, path, name)]
            assert (generated["min_workers"], generated["max_workers"]) == (spec.get("min_workers", 0),
                                                                            spec.get("max_workers", 0))
            assert generated["resources"].get(FAKE_GPU, 0) == spec.get("resources", {}).get("GPU", 0)
    assert yaml.safe_load((REPO / "clusters/aws-gpu.yaml").read_text())["idle_timeout_minutes"] == 10
    assert config["idle_timeout_minutes"] == pytest.approx(5 / 60, abs=1e-3)  # rayjob's 300 s, a minute a second


SWEEP_TYPE = "gpu_a100_8g"  # gcp-gpu.yaml: max_workers 2


def test_each_node_type_is_launched_for_its_work_and_removed_when_idle(cluster) -> None:
    """One task per launchable node type of every YAML, each asking for a whole node of that type: the
    autoscaler launches that type (its log names it), the task runs on a node of the YAML it asked of, and
    every launched node is removed once idle."""
    head, config = cluster
    wanted = {}
    for path in YAMLS:
        for name in worker_types(autoscaler_view(path)):
            key = type_name(config, path, name)
            if config["available_node_types"][key]["max_workers"] > 0:
                wanted[key] = demand(path, key, config)
    start = len(autoscaler_log(head))
    ran = drive(head, f"""
        @ray.remote
        def where():
            return os.environ.get("RAY_NODE_TYPE_NAME")
        wanted = {wanted!r}
        refs = {{name: where.options(num_cpus=r.pop("CPU"), resources=r).remote() for name, r in wanted.items()}}
        print(json.dumps({{name: ray.get(ref, timeout=80) for name, ref in refs.items()}}))
    """)
    for name in wanted:  # a task may land on a bigger node of its YAML that came up first
        wait_for_log(head, rf"Launching \d+ nodes, type {re.escape(name)}\.", after=start)
        assert wanted[ran[name]].keys() == wanted[name].keys(), (name, ran[name])
        assert wanted[ran[name]].get(FAKE_GPU, 0) >= wanted[name].get(FAKE_GPU, 0), (name, ran[name])
    launched = sum(int(n) for n in re.findall(r"Launching (\d+) nodes", autoscaler_log(head)[start:]))
    assert launched >= len(wanted)  # more when a task took a bigger node and its own type's demand stayed
    wait_for_log(head, r"Terminating the node with id \w+ and ip \w+\. \(idle\)", count=launched, after=start)


def test_four_demands_grow_a_node_type_to_its_max_workers_and_no_further(cluster) -> None:
    """A sweep's 4 trials, each an actor holding a whole gpu_a100_8g (max_workers 2): 2 nodes come up, the
    other 2 trials wait (the autoscaler launches no third node) and run once the first 2 end."""
    head, config = cluster
    assert config["available_node_types"][SWEEP_TYPE]["max_workers"] == 2
    need = demand(YAMLS[1], SWEEP_TYPE, config)
    start = len(autoscaler_log(head))
    ran = drive(head, f"""
        import pathlib

        @ray.remote
        class Trial:
            def node(self):
                return ray.get_runtime_context().get_node_id()
        need = {need!r}
        cpus = need.pop("CPU")
        trials = [Trial.options(num_cpus=cpus, resources=need).remote() for _ in range(4)]
        pings = {{t.node.remote(): t for t in trials}}
        first, rest = ray.wait(list(pings), num_returns=2, timeout=80)
        def updates():  # the autoscaler's status reports so far (one per update, in its monitor.log)
            logs = {{p.resolve() for p in pathlib.Path({head.temp_dir!r}).glob("session_*/logs/monitor.log")}}
            return sum(p.read_text(errors="replace").count("Autoscaler status:") for p in logs)
        seen, deadline = updates(), time.monotonic() + 30
        while updates() < seen + 3 and time.monotonic() < deadline:  # three updates with 2 trials still pending
            time.sleep(0.2)
        assert updates() >= seen + 3, "the autoscaler reported no three updates within 30 s"
        waiting = len(ray.wait(rest, num_returns=len(rest), timeout=0)[0])
        nodes = ray.get(first)
        for ref in first:
            ray.kill(pings[ref])
        print(json.dumps({{"first": nodes, "waiting_done": waiting, "rest": ray.get(rest, timeout=60)}}))
    """)
    assert len(set(ran["first"])) == 2 and ran["waiting_done"] == 0, ran
    assert set(ran["rest"]) <= set(ran["first"]), ran  # the last 2 trials ran on the same 2 nodes
    wait_for_log(head, rf"Launching \d+ nodes, type {SWEEP_TYPE}\.", after=start)
    log = autoscaler_log(head)[start:]
    active = [int(n) for n in re.findall(rf"^ (\d+) {SWEEP_TYPE}$", log, re.M)]
    assert max(active) == 2, active  # the autoscaler's status, every second: never more than max_workers up


UNFULFILLABLE = "No available node types can fulfill resource request {'CPU': 2.0}"


def test_a_request_no_node_type_can_hold_is_refused_by_the_planner_and_the_autoscaler(cluster) -> None:
    """One worker of 2 CPUs (every node type has 1): our planner refuses at once in one line, and the
    autoscaler reports the same request as one no node type can fulfil (it launches nothing)."""
    head, _ = cluster
    start = len(autoscaler_log(head))
    out = drive(head, """
        import glob
        from hrm_ray.config import RayConfig
        from hrm_ray.errors import UserError
        from hrm_ray.train.resources import cluster_now, plan_run, run_need
        began = time.monotonic()
        try:
            plan_run(cluster_now(), run_need(RayConfig(num_workers=1, cpus_per_worker=2.0), reads_data=False))
            refusal = None
        except UserError as error:
            refusal = str(error)
        seconds = time.monotonic() - began
        ref = ray.remote(lambda: 1).options(num_cpus=2).remote()
        deadline = time.monotonic() + 30  # pending until the autoscaler has reported it (its 1 s update)
        while time.monotonic() < deadline and not any(
                SEEN in open(log, errors="replace").read() for log in glob.glob(LOGS)):
            time.sleep(0.2)
        ray.cancel(ref)
        print(json.dumps({"refusal": refusal, "seconds": seconds}))
    """.replace("SEEN", repr(UNFULFILLABLE)).replace("LOGS", repr(f"{head.temp_dir}/session_*/logs/monitor.log")))
    assert out["refusal"] and "\n" not in out["refusal"] and "2 CPUs" in out["refusal"], out
    assert out["seconds"] < 5
    wait_for_log(head, re.escape(UNFULFILLABLE), after=start)
    launched = [line for line in autoscaler_log(head)[start:].splitlines() if "Launching" in line]
    assert launched == [], launched


def test_the_planner_finds_the_autoscalers_config_whatever_the_order_of_the_heads_processes(cluster) -> None:
    """The planner reads the v1 autoscaler's config file from its monitor.py's command line; every node's
    log_monitor.py has the same GCS address and no config: it is passed over, found before or after."""
    from hrm_ray.train.resources import launcher_config_path

    head, _ = cluster
    cmdlines = []
    for pid in processes_of(head):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"))
    assert any(Path(part).name == "log_monitor.py" for cmd in cmdlines for part in cmd)
    for order in (cmdlines, cmdlines[::-1]):
        assert launcher_config_path(order, head.gcs_address) == f"{head.temp_dir}/autoscaling.yaml"


def test_a_run_on_a_head_with_no_worker_nodes_scales_up_and_trains(cluster, tmp_path) -> None:
    """`hrm-ray train --num_workers 1` (a tiny run) on the head alone: its worker's CPU fits after scale-up,
    so the autoscaler launches a node and the run finishes (the planner reads the v1 autoscaler's config file,
    which it publishes nowhere else)."""
    head, _ = cluster
    start = len(autoscaler_log(head))
    done = subprocess.run(
        [str(Path(sys.executable).with_name("hrm-ray")), "train", "--address", head.gcs_address, "--num_workers", "1",
         "--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers", "1",
         "--synthetic_train_size", "64", "--synthetic_val_size", "16", "--batch_size", "16", "--steps", "2",
         "--val_every", "2", "--log_steps", "2", "--wandb", "off", "--save_dir", str(tmp_path), "--run_name", "as"],
        cwd=REPO, env=clean_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"), capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    wait_for_log(head, r"Launching 1 nodes, type ", after=start)


def test_a_preempted_worker_node_is_replaced_and_the_run_resumes_from_its_bucket_checkpoint(
        cluster, tmp_path, s3_bucket) -> None:
    """A run with its checkpoints in a bucket loses the node of its one worker (its raylet and every process
    under it killed at once, as a preempted machine's are) once its first checkpoint is there: the autoscaler
    launches a replacement for the restarted worker group (`--max_failures`) and removes the lost node, and
    the run resumes on the new node from its newest checkpoint in the bucket and finishes."""
    head, _ = cluster
    storage, name = f"{s3_bucket}/runs", "preempted"
    run_dir = f"{storage}/{name}"
    run = subprocess.Popen(
        [str(Path(sys.executable).with_name("hrm-ray")), "train", "--address", head.gcs_address, "--num_workers", "1",
         "--max_failures", "2", "--d_model", "32", "--n_heads", "2", "--encoder_layers", "1", "--decoder_layers",
         "1", "--synthetic_train_size", "64", "--synthetic_val_size", "16", "--batch_size", "16", "--steps", "30",
         "--val_every", "5", "--log_steps", "5", "--wandb", "off", "--storage_path", storage, "--run_name", name],
        cwd=REPO, env=clean_env(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        # whether or not Ray's controller has registered it yet: the restart takes the bucket's newest
        wait_for(lambda: storage_lib.exists(f"{run_dir}/checkpoint_00000005/meta.json"), "first checkpoint", 90)
        node = json.loads(storage_lib.read_text(f"{run_dir}/workers.json"))[0]["node_id"]
        start = len(autoscaler_log(head))
        killed = kill_launched_node(head, node)
        output = run.communicate(timeout=100)[0]
    finally:
        if run.poll() is None:
            run.kill()
    assert len(killed) >= 2, f"node {node}: killed {killed} (its raylet and its worker at least)"
    assert run.returncode == 0, output[-3000:]
    wait_for_log(head, rf"Terminating the node with id {node} ", after=start)
    wait_for_log(head, r"Launching 1 nodes, type ", after=start)
    resumed = re.search(rf"resumed '{name}' from {re.escape(run_dir)}/checkpoint_(\d+) at step (\d+)", output)
    assert resumed and int(resumed[2]) >= 5 and resumed[1] == f"{int(resumed[2]):08d}", [
        line for line in output.splitlines() if "resumed" in line or "rror" in line]
    assert "step 30/30" in output and f"run '{name}' finished at step 30/30" in output, output[-3000:]
    nodes = {r["node_id"] for r in json.loads(storage_lib.read_text(f"{run_dir}/workers.json"))}
    assert nodes and node not in nodes  # the resumed worker ran on the replacement
