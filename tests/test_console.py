"""`--verbose` anywhere on a command line brings Ray's own logs back; without it they go to log files."""
from __future__ import annotations

import pytest

from hrm_ray.console import VERBOSE_ENV, ray_runtime_env, take_verbose_flag, train_log_level


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    monkeypatch.setenv(VERBOSE_ENV, "0")  # restored afterwards, whatever the test sets


def test_quiet_by_default_and_verbose_anywhere_on_the_line():
    assert take_verbose_flag(["data", "prepare", "--source", "x"]) == ["data", "prepare", "--source", "x"]
    assert train_log_level() == "ERROR" and ray_runtime_env()["env_vars"][VERBOSE_ENV] == "0"
    assert take_verbose_flag(["data", "prepare", "--verbose", "--source", "x"]) == ["data", "prepare", "--source", "x"]
    assert train_log_level() == "INFO" and ray_runtime_env()["env_vars"][VERBOSE_ENV] == "1"


def test_workers_get_the_same_console_rules():
    env = ray_runtime_env()
    assert env["worker_process_setup_hook"] == "hrm_ray.console.quiet_ray"
    assert env["env_vars"]["RAY_TRAIN_ENABLE_PRINT_PATCH"] == "0"


def test_rays_own_streamed_lines_stay_off_the_console():
    from hrm_ray.console import keep_streamed

    assert keep_streamed({"pid": 7, "actor_name": "RayTrainWorker", "is_err": False, "lines": ["step 1/2"]})
    assert keep_streamed({"pid": 7, "task_name": "prepare", "is_err": True, "lines": ["a user's warning"]})
    assert not keep_streamed({"pid": "raylet", "is_err": True, "lines": ["Raylet is terminated."]})
    for actor in ("TrainController", "PlacementGroupCleaner"):
        assert not keep_streamed({"pid": 8, "actor_name": actor, "is_err": True, "lines": ["Traceback"]})
    assert not keep_streamed({"pid": 7, "actor_name": "RayTrainWorker", "is_err": True,
                              "lines": ["Error in training function:", "Traceback (most recent call last):"]})
