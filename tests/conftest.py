"""Shared fixtures: one Ray session for the whole test run, and the real data directory."""
from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real data (read-only): $HRM_RAY_DATA, default ../shared/data beside the repo."""
    path = Path(os.environ.get("HRM_RAY_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(f"real data directory not found: {path} (set HRM_RAY_DATA)")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """A single local Ray instance shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    gc.collect()  # finish abandoned Ray Data iterators while Ray is still up
    ray.shutdown()
