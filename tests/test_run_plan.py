"""The run plan: the mode, the workers, the storage root and the data path read once from the resolved config,
whichever user-facing flag set them; every model family names a task that a Task class trains."""
from __future__ import annotations

import pytest

from hrm_ray.config import build_config
from hrm_ray.errors import UserError
from hrm_ray.models import registry
from hrm_ray.storage import STORAGE_ENV
from hrm_ray.train.resolve import resolve_config
from hrm_ray.train.run_plan import ELASTIC, FIXED, IN_PROCESS, run_plan
from hrm_ray.train.task_registry import TASKS, task_class


def test_the_mode_and_the_workers_follow_num_workers():
    expected = {"0": (IN_PROCESS, 0, 1, [0]), "2": (FIXED, 2, 2, [2]), "1-4": (ELASTIC, (1, 4), 4, [1, 2, 3, 4])}
    for flag, (mode, group, planned, sizes) in expected.items():
        plan = run_plan(build_config(None, ["--num_workers", flag]))
        assert (plan.mode, plan.ray_group_size(), plan.planned_workers, list(plan.group_sizes())) == \
            (mode, group, planned, sizes), flag
    assert [run_plan(build_config(None, ["--num_workers", f])).fixed_group for f in ("0", "2", "1-4")] == \
        [False, True, False]  # only a fixed group streams Ray Dataset shards


def test_storage_path_and_the_seeds_save_dir_give_one_storage_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "env"))
    given = run_plan(build_config(None, ["--storage_path", "runs"]))
    assert given.storage_root == run_plan(build_config(None, ["--save_dir", "runs"])).storage_root == str(tmp_path / "runs")
    assert given.run_dir("a") == str(tmp_path / "runs" / "a")
    assert run_plan(build_config(None, [])).storage_root == str(tmp_path / "env")  # no flag: $HRM_RAY_STORAGE
    resolved = resolve_config(build_config(None, ["--storage_path", "runs"]))
    assert resolved.ray.storage_path == given.storage_root and run_plan(resolved) == given  # pinned once


def test_every_family_names_a_task_class_and_an_unknown_task_is_one_line():
    assert {family.task for family in registry.FAMILIES.values()} <= set(TASKS)
    assert task_class(build_config(None, ["model.name=trm_mlp"])).name == "puzzle"
    assert task_class(build_config(None, [])).name == "lm"
    cfg = build_config(None, [])
    family = registry.FAMILIES["hrm_lm"]
    try:
        registry.FAMILIES["hrm_lm"] = registry.Family("hrm_lm", family.config_class, family.build, "speech")
        with pytest.raises(UserError, match="names task 'speech', which no Task class trains") as err:
            task_class(cfg)
        assert "\n" not in str(err.value)
    finally:
        registry.FAMILIES["hrm_lm"] = family
