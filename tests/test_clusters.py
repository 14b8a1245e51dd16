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
