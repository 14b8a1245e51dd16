"""Cluster configs: launcher YAMLs pass Ray's own schema, KubeRay manifests carry what the operator
needs, nothing secret is written down, and the dashboard stays on loopback."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTERS = REPO / "clusters"
LAUNCHER_YAMLS = ["aws-gpu.yaml", "gcp-gpu.yaml", "local.yaml"]
KUBERAY_YAMLS = ["kuberay/raycluster.yaml", "kuberay/rayjob-stage-b.yaml"]
DOC = REPO / "docs" / "clusters.md"

SECRET_PATTERNS = [
    re.compile(r"aws_secret_access_key", re.I),
    re.compile(r"aws_access_key_id\s*[:=]", re.I),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\"private_key\"\s*:"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"),
    re.compile(r"\bxox[abp]-[A-Za-z0-9-]{10,}"),
    re.compile(r"(RAY_AUTH_TOKEN|api[_-]?key|password|secret)\s*[:=]\s*['\"]?[A-Za-z0-9+/_\-]{12,}", re.I),
    re.compile(r"https?://[^/\s:@]+:[^/\s@]+@"),
]


def _load(relpath: str) -> dict:
    return yaml.safe_load((CLUSTERS / relpath).read_text())


def _ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_yaml_validates_against_ray_schema(name: str) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (a Ray dependency) is not importable")
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _load(name)
    jsonschema.validate(config, _ray_schema())
    # What `ray up` itself does before launching: fill in provider defaults, then validate.
    validate_config(prepare_config(config))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_cloud_yaml_shape(name: str) -> None:
    config = _load(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert "GPU" not in head["resources"] or head["resources"]["GPU"] == 0
    workers = {k: v for k, v in types.items() if k != config["head_node_type"]}
    assert len(workers) >= 2
    for spec in workers.values():
        assert spec["min_workers"] == 0 and spec["max_workers"] > 0, "GPU workers must autoscale from zero"
    machine_key = "InstanceType" if config["provider"]["type"] == "aws" else "machineType"
    machines = {spec["node_config"][machine_key] for spec in workers.values()}
    if name == "aws-gpu.yaml":
        assert machines == {"g5.12xlarge", "p4d.24xlarge"}
        assert any(s["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
                   for s in workers.values())
    else:
        assert all(m.startswith("a2-highgpu") for m in machines)
        assert any(s["node_config"].get("scheduling", {}).get("provisioningModel") == "SPOT"
                   for s in workers.values())
    assert config["idle_timeout_minutes"] > 0
    assert any("[cuda]" in cmd for cmd in config["worker_setup_commands"])
    assert any("HRM_RAY_STORAGE" in cmd for cmd in config["setup_commands"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", LAUNCHER_YAMLS)
def test_launcher_dashboard_on_loopback_and_token_auth(name: str) -> None:
    config = _load(name)
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in yaml.safe_dump(config)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    env_lines = " ".join(config["setup_commands"])
    assert "RAY_AUTH_MODE=token" in env_lines
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("hrm-ray.env" in c for c in starts), f"{key} must load RAY_AUTH_MODE"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", KUBERAY_YAMLS)
def test_kuberay_manifest_fields(name: str) -> None:
    doc = _load(name)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["metadata"]["name"]
    cluster = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert doc["kind"] in {"RayCluster", "RayJob"}
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    head_container = head["template"]["spec"]["containers"][0]
    assert head_container["image"] and head_container["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    groups = cluster["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"], "worker group must be able to scale"
        container = group["template"]["spec"]["containers"][0]
        assert container["image"]
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    if doc["kind"] == "RayJob":
        assert "python experiments/stage_b.py --profile cluster" in doc["spec"]["entrypoint"]
        assert not re.search(r"&&|;|\$", doc["spec"]["entrypoint"]), "submitter runs it in a shell"
        assert doc["spec"]["shutdownAfterJobFinishes"] is True
        assert yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["working_dir"]
    else:
        assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"


@pytest.mark.timeout(30)
def test_no_credentials_in_cluster_files() -> None:
    files = sorted(p for p in CLUSTERS.rglob("*") if p.is_file()) + [DOC]
    assert len(files) >= 6
    for path in files:
        text = path.read_text()
        for pattern in SECRET_PATTERNS:
            match = pattern.search(text)
            assert match is None, f"{path.relative_to(REPO)}: looks like a credential: {match.group(0)!r}"


@pytest.mark.timeout(30)
def test_secret_patterns_catch_real_looking_secrets() -> None:
    leaks = [
        "aws_secret_access_key = abc",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "env: RAY_AUTH_TOKEN=3f9a0c1e2b4d5f6a7b8c",
        "pip install git+https://user:ghp_abcdefghijklmnopqrstuvwx@github.com/x/y",
    ]
    for leak in leaks:
        assert any(p.search(leak) for p in SECRET_PATTERNS), leak


@pytest.mark.timeout(30)
def test_docs_cover_the_workflow() -> None:
    text = DOC.read_text()
    for needle in ["ray up", "ray job submit", "--working-dir .", "ray job logs", "ray down",
                   "python experiments/stage_b.py --profile cluster", "--storage_path", "s3://", "gs://",
                   "RAY_AUTH_MODE=token", "ray get-auth-token", "ray dashboard", "--dashboard-host=127.0.0.1",
                   "HRM_RAY_STORAGE"]:
        assert needle in text, f"docs/clusters.md does not mention {needle!r}"


# --- Commands that work as written, capacity that fits, workers that can reach the bucket ---------

DOCUMENTED = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted(CLUSTERS.rglob("*.yaml")),
              *sorted((REPO / "experiments" / "configs").glob("*.yaml"))]
# A line continued with a backslash, the next line possibly a YAML comment (`#   ...`).
CONTINUATION = re.compile(r"\\\n\s*#?\s*")
# `ray job submit [options] -- ENTRYPOINT`, in a code block or an inline code span (which may wrap).
SUBMIT = re.compile(r"ray job submit\b([^`]{0,300}?)\s--\s([^\n`]*)")
SHELL_VAR = re.compile(r"\$\{?[A-Za-z_]")


def submitted_entrypoints(text: str) -> list[str]:
    """The entrypoints of the `ray job submit ... -- ENTRYPOINT` commands in `text`."""
    return [m.group(2) for m in SUBMIT.finditer(CONTINUATION.sub(" ", text))]


@pytest.mark.timeout(30)
def test_entrypoint_scan_catches_an_unexpanded_variable() -> None:
    text = ("ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\\n"
            "#       python experiments/stage_b.py --profile cluster --storage_path '$HRM_RAY_STORAGE'\n"
            "`ray job submit\n--working-dir . -- python x.py --save_dir ${HOME}/runs` and `ray job logs`\n")
    entrypoints = submitted_entrypoints(text)
    assert len(entrypoints) == 2 and all(SHELL_VAR.search(e) for e in entrypoints), entrypoints


@pytest.mark.timeout(30)
def test_no_shell_variable_in_submitted_entrypoints() -> None:
    """Ray quotes each entrypoint argument: a `$VAR` there reaches the job literally, not expanded."""
    seen = 0
    for path in DOCUMENTED:
        for entrypoint in submitted_entrypoints(path.read_text()):
            seen += 1
            assert not SHELL_VAR.search(entrypoint), f"{path.relative_to(REPO)}: {entrypoint!r}"
    assert seen >= 6, "no `ray job submit ... -- python ...` command found: the scan is broken"


def _cluster_profiles() -> dict[str, tuple[int, float]]:
    """config file -> (ray.num_workers, ray.cpus_per_worker) of its GPU `cluster` profile (bases applied)."""
    from hrm_ray.config import load_yaml

    found = {}
    for path in sorted((REPO / "experiments" / "configs").glob("*.yaml")):
        if "cluster" not in (yaml.safe_load(path.read_text()).get("profiles") or {}):
            continue
        ray_cfg = load_yaml(path, profile="cluster").ray
        if ray_cfg.use_gpu:
            found[path.name] = (ray_cfg.num_workers, ray_cfg.cpus_per_worker)
    return found


def _per_node(gpus: float, cpus: float, cpus_per_worker: float) -> int:
    """Ray Train workers (1 GPU and `cpus_per_worker` CPUs each) one node or pod holds."""
    return int(min(gpus, cpus // cpus_per_worker))


def _cloud_capacity(config: dict, cpus_per_worker: float, spot_only: bool = False) -> int:
    """Most workers one worker node type of a launcher YAML holds at its `max_workers`."""
    best = 0
    for name, spec in config["available_node_types"].items():
        if name == config["head_node_type"] or (spot_only and not _is_spot(spec["node_config"])):
            continue
        nodes = min(spec["max_workers"], config["max_workers"])
        best = max(best, nodes * _per_node(spec["resources"]["GPU"], spec["resources"]["CPU"], cpus_per_worker))
    return best


def _kuberay_capacity(doc: dict, cpus_per_worker: float) -> int:
    """Workers the manifest's GPU worker groups hold at their `maxReplicas`."""
    cluster = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    total = 0
    for group in cluster["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        total += group["maxReplicas"] * _per_node(int(limits["nvidia.com/gpu"]), float(limits["cpu"]),
                                                  cpus_per_worker)
    return total


def _is_spot(node_config: dict) -> bool:
    return (node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
            or node_config.get("scheduling", {}).get("provisioningModel") == "SPOT"
            or node_config.get("scheduling", {}).get("preemptible") is True)


@pytest.mark.timeout(60)
def test_cluster_profiles_fit_the_cluster_files() -> None:
    """A `cluster` profile asking for more GPU workers than a cluster can start waits for them forever
    (a RayJob until its deadline); the spot types alone must hold it too (a reclaimed node is replaced)."""
    profiles = _cluster_profiles()
    assert {"curriculum.yaml", "stage_b.yaml", "sudoku.yaml"} <= set(profiles)
    for config_name, (workers, cpus) in profiles.items():
        for name in ("aws-gpu.yaml", "gcp-gpu.yaml"):
            config = _load(name)
            assert _cloud_capacity(config, cpus) >= workers, f"{config_name}: {workers} workers > {name}"
            assert _cloud_capacity(config, cpus, spot_only=True) >= workers, f"{config_name}: spot in {name}"
        for name in KUBERAY_YAMLS:
            assert _kuberay_capacity(_load(name), cpus) >= workers, f"{config_name}: {workers} workers > {name}"


@pytest.mark.timeout(30)
def test_workers_carry_bucket_credentials() -> None:
    """Ray gives only the head a role (AWS) or a service account (GCP); workers write checkpoints too."""
    for name, key in (("aws-gpu.yaml", "IamInstanceProfile"), ("gcp-gpu.yaml", "serviceAccounts")):
        config = _load(name)
        for node_type, spec in config["available_node_types"].items():
            if node_type == config["head_node_type"]:
                continue
            credential = spec["node_config"].get(key)
            assert credential, f"{name}: worker type {node_type} has no {key}"
            if key == "IamInstanceProfile":
                assert credential.get("Name") or credential.get("Arn"), f"{name}: {node_type}"
            else:
                scopes = [s for account in credential for s in account["scopes"]]
                assert any("devstorage" in s or "cloud-platform" in s for s in scopes), f"{name}: {node_type}"
    for name in KUBERAY_YAMLS:
        doc = _load(name)
        cluster = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for group in groups:
            assert group["template"]["spec"].get("serviceAccountName"), f"{name}: a pod template has none"
