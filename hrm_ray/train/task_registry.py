"""Task name -> the Task class that trains it. A model family names its task in its registry entry
(hrm_ray.models.registry, `Family.task`); what differs between tasks before one is built (resolving the
config, the global batch, the memory probe, the dry run) is a class method of the task, so nothing outside
the task classes asks which task a config has. Adding a task is its class and one entry in TASKS.
"""
from __future__ import annotations

from hrm_ray.config import Config
from hrm_ray.errors import UserError
from hrm_ray.models import registry
from hrm_ray.train.lm_task import LanguageModelTask
from hrm_ray.train.puzzle_task import PuzzleTask

TASKS: dict[str, type] = {cls.name: cls for cls in (LanguageModelTask, PuzzleTask)}


def task_class(cfg: Config) -> type:
    """The Task class of `cfg`'s model family; its class attributes (selection_metric, selection_mode) and class
    methods are known without building it."""
    try:
        return TASKS[cfg.task]
    except KeyError:
        raise UserError(f"model.name: model {cfg.model.name} names task '{cfg.task}', which no Task class trains "
                        f"(known: {', '.join(TASKS)})") from None


def build_task(cfg: Config):
    """The task of `cfg`'s model family, built for `cfg` (as `resolve_config` returns it)."""
    return task_class(cfg)(cfg)


def models_of(cls: type) -> list[str]:
    """Every `model.name` (families and presets) whose family the task `cls` trains."""
    return [name for name in registry.names() if registry.resolve(name)[0].task == cls.name]
