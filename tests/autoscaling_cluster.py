"""Our cluster YAMLs as configs for Ray's fake multi-node autoscaler, which launches real raylets on this
machine when a job asks for more than the cluster has. From the command line (docs/clusters.md):

    python -m tests.autoscaling_cluster clusters/aws-gpu.yaml --gcs_address 127.0.0.1:6390 > /tmp/fake-aws.yaml
    RAY_FAKE_CLUSTER=1 ray start --head --port 6390 --num-cpus 0 --autoscaling-config /tmp/fake-aws.yaml ...

What is kept from a YAML, as Ray's own autoscaler reads it (KubeRay manifests through Ray's KubeRay
translation, `local` clusters through Ray's local-provider preparation): the worker node types' names,
`min_workers`/`max_workers`, the cluster's `max_workers` and `upscaling_speed`, and `idle_timeout_minutes`
scaled by `time_scale` (1/60: a minute becomes a second). Resources are scaled to one machine: NODE_CPUS per
node, and a node type's GPUs become as many units of the custom resource FAKE_GPU (a real "GPU" would make
Ray believe in GPUs that are not there), so CPU-only raylets run the work meant for them. The head is
Ray's fake head type HEAD_TYPE (the fake provider names it so) with no CPUs: jobs need worker nodes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

FAKE_GPU = "fake_gpu"
NODE_CPUS = 1
NODE_OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's least is 75 MiB; the default (30% of RAM) per node is too much
HEAD_TYPE = "ray.head.default"
TIME_SCALE = 1 / 60  # each minute of a YAML's idle timeout becomes one second
GCS_PLACEHOLDER = "127.0.0.1:6379"  # replaced by the head's real GCS address (tests.ray_heads)
# Ray's fake provider: node ids stand for IPs (its nodes share one), no SSH updaters, no launch-config hashes
PROVIDER = {"type": "fake_multinode", "gcs_address": GCS_PLACEHOLDER, "use_node_id_as_ip": True,
            "disable_node_updaters": True, "disable_launch_config_check": True}
EMPTY_LISTS = ("cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands", "setup_commands",
               "head_setup_commands", "worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")


def autoscaler_view(path: Path) -> dict:
    """The cluster config of `path` as Ray's autoscaler reads it: a launcher YAML as is (a `local` one after
    Ray's own preparation, which makes its worker_ips one node type), a KubeRay RayCluster or RayJob through
    Ray's KubeRay translation (a worker group becomes a node type)."""
    doc = yaml.safe_load(Path(path).read_text())
    kind = doc.get("kind")
    if kind in ("RayCluster", "RayJob"):
        from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

        spec = doc["spec"]["rayClusterSpec"] if kind == "RayJob" else doc["spec"]
        return _derive_autoscaling_config_from_ray_cr(
            {"metadata": {"name": doc["metadata"]["name"], "namespace": "default"}, "spec": spec})
    if doc["provider"]["type"] == "local":
        from ray.autoscaler._private.local.config import prepare_local

        return prepare_local(doc)[0]
    return doc


def scaled_resources(resources: dict) -> dict:
    """A node type's resources on this machine: NODE_CPUS, its GPUs as FAKE_GPU, a small object store."""
    scaled = {"CPU": NODE_CPUS, "object_store_memory": NODE_OBJECT_STORE_BYTES}
    gpus = resources.get("GPU", 0)
    if gpus:
        scaled[FAKE_GPU] = gpus
    return scaled


def worker_types(config: dict) -> dict[str, dict]:
    """The worker node types of an autoscaler config (a `local` cluster's one type is its head's too: kept)."""
    head = config["head_node_type"]
    types = config["available_node_types"]
    return {name: spec for name, spec in types.items() if name != head or config["provider"]["type"] == "local"}


def fake_config(paths: list[Path], time_scale: float = TIME_SCALE, marker: bool = False) -> dict:
    """One fake_multinode config holding the worker node types of every YAML in `paths`. A name two YAMLs
    share is qualified by the later YAML's stem ("rayjob-stage-b.gpu-a100"). `marker`: each node type also
    carries one unit of the resource `marker_resource(path)`, so that a request can name its YAML."""
    types: dict[str, dict] = {HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}}
    max_workers, idle_minutes, upscaling = 0, [], []
    for path in paths:
        config = autoscaler_view(path)
        for name, spec in worker_types(config).items():
            resources = scaled_resources(spec.get("resources", {}))
            if marker:
                resources[marker_resource(path)] = 1
            types[name if name not in types else f"{Path(path).stem}.{name}"] = {
                "resources": resources, "node_config": {}, "min_workers": spec.get("min_workers", 0),
                "max_workers": spec.get("max_workers", 0)}
        max_workers += config.get("max_workers", sum(s.get("max_workers", 0) for s in worker_types(config).values()))
        idle_minutes.append(config.get("idle_timeout_minutes", 5) * time_scale)
        upscaling.append(config.get("upscaling_speed", 1.0))
    return {"cluster_name": "fake-" + "-".join(Path(p).stem for p in paths), "max_workers": max_workers,
            "upscaling_speed": min(upscaling), "idle_timeout_minutes": round(min(idle_minutes), 4),
            "provider": PROVIDER,
            "auth": {"ssh_user": "ray"}, "docker": {}, "file_mounts": {}, "file_mounts_sync_continuously": False,
            **{key: [] for key in EMPTY_LISTS}, "available_node_types": types, "head_node_type": HEAD_TYPE}


def type_name(config: dict, path: Path, name: str) -> str:
    """The name node type `name` of the YAML at `path` has in the generated `config`."""
    qualified = f"{Path(path).stem}.{name}"
    return qualified if qualified in config["available_node_types"] else name


def marker_resource(path: Path) -> str:
    """The custom resource that names the YAML a node type came from: "cluster_aws-gpu"."""
    return f"cluster_{Path(path).stem}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.autoscaling_cluster", description=__doc__.split("\n")[0])
    parser.add_argument("yamls", nargs="+", type=Path, help="cluster YAMLs (launcher or KubeRay)")
    parser.add_argument("--gcs_address", default=GCS_PLACEHOLDER, help="the head's GCS (its ray start --port)")
    parser.add_argument("--time_scale", type=float, default=TIME_SCALE, help="idle timeout factor (1/60)")
    args = parser.parse_args(argv)
    config = fake_config(args.yamls, args.time_scale)
    config["provider"] = {**PROVIDER, "gcs_address": args.gcs_address}
    sys.stdout.write(f"# generated by python -m tests.autoscaling_cluster from {' '.join(map(str, args.yamls))}\n")
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))


if __name__ == "__main__":
    main()
