"""Shared fixtures: one Ray session for the whole test run, and the slices of real data in tests/data."""
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
def real_data() -> Path:
    """Small slices of real data committed with the tests (tests/data/README.md names their sources)."""
    return REPO_ROOT / "tests" / "data"


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
