"""What reaches the console: progress, evaluations and results. Ray's own chatter (Ray Data execution
plans, Ray Train's INFO lines, deprecation warnings) goes to Ray's log files in the session directory.

`quiet_ray()` runs in the driver and, as the runtime env's worker setup hook, in every Ray worker
process, so Ray Data's split coordinators and Ray Train's controller are quiet too. `--verbose`
(`HRM_RAY_VERBOSE=1`, inherited by child processes and passed to workers) leaves Ray as it is.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

VERBOSE_ENV = "HRM_RAY_VERBOSE"
SETUP_HOOK = "hrm_ray.console.quiet_ray"
RAY_DATA_LOGGING = Path(__file__).with_name("ray_data_logging.yaml")


def set_verbose(verbose: bool) -> None:
    if verbose:
        os.environ[VERBOSE_ENV] = "1"


def is_verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")



class RayDataConsoleFilter(logging.Filter):
    """Ray Data's warnings only. Not its errors: the exception reaches the caller, which reports it on one
    line; nor the notice, on every run, that progress bars are off (they are off on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno == logging.WARNING and not record.getMessage().startswith("Progress bars")


# Ray Train's own actors: its controller and their helpers (Ray Data's warnings are kept: RayDataConsoleFilter)
RAY_OWN_ACTORS = ("TrainController", "PlacementGroupCleaner", "AutoscalingCoordinator", "_AutoscalingCoordinator",
                  "PreemptionWatcher", "TrainStateActor")


def keep_streamed(data: dict[str, Any]) -> bool:
    """Whether a batch of lines Ray streams to the driver from its processes reaches the console: our
    workers' output (progress, evaluations) does. Ray's own does not: a raylet's notices ("Raylet is
    terminated", "marked dead"), Ray's own actors (Ray Train's controller: its C++ warnings, a restart's
    traceback; its placement-group cleaner's traceback when its Ray goes away), nor a
    Train worker's stderr (the traceback of a step that failed when a peer was lost: the driver reports a
    failure on one line, and a restart says where it resumed). All stay in the session's log files."""
    actor = data.get("actor_name") or ""
    if data.get("pid") == "raylet" or actor.startswith(RAY_OWN_ACTORS):
        return False
    return not (data.get("is_err") and actor.startswith("RayTrainWorker"))


def _filtered(printer: Any) -> Any:
    if getattr(printer, "filtered", False):
        return printer

    def keep_then_print(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if keep_streamed(data):
            printer(data, *args, **kwargs)
    keep_then_print.filtered = True  # type: ignore[attr-defined]
    return keep_then_print


def filter_streamed_logs() -> None:
    """Put `keep_streamed` in front of Ray's two printers on the driver: of the lines its processes stream,
    and of the error notices the GCS publishes (a raylet's, printed as "(raylet)")."""
    try:  # Ray internals: a Ray that moved them prints everything, as before
        import ray._private.worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    ray_worker.print_to_stdstream = _filtered(ray_worker.print_to_stdstream)
    for name, handler in list(dispatcher.handlers):
        if name == "ray_print_logs":
            dispatcher.remove_handler(name)
            dispatcher.add_handler(name, _filtered(handler))


def quiet_ray() -> None:
    """Ray Data logs through `ray_data_logging.yaml` (it reconfigures its loggers per dataset, so the
    config is what stays); Ray Train's per-report INFO line and Ray's deprecation warnings are hidden, and
    Ray's own streamed lines are kept off the driver's console (`keep_streamed`)."""
    if is_verbose():
        return
    filter_streamed_logs()
    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(RAY_DATA_LOGGING)
    import ray.data
    from ray.util.annotations import RayDeprecationWarning

    ray.data.DataContext.get_current().enable_progress_bars = False
    warnings.filterwarnings("ignore", category=RayDeprecationWarning)
    try:  # Ray internals: a Ray that moved them keeps its chatter, and every worker still starts
        from ray.data._internal.logging import configure_logging
        from ray.train.v2._internal.execution import context
    except ImportError:
        return
    configure_logging()
    logging.getLogger(context.__file__).setLevel(logging.WARNING)  # "Reporting training result N: ..."


def ray_runtime_env() -> dict[str, Any]:
    """The runtime env every Ray this project starts or joins gets: the same console rules in workers."""
    env_vars = {VERBOSE_ENV: "1" if is_verbose() else "0",
                # Ray Train's print patch sends a worker's print() to its logger and, at times, to stdout too
                "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    return {"worker_process_setup_hook": SETUP_HOOK, "env_vars": env_vars}


def ray_log_level() -> int:
    """The driver's 'ray' logger ("Connecting to existing Ray cluster at ...")."""
    return logging.INFO if is_verbose() else logging.WARNING


def train_log_level() -> str:
    """Ray Train's own log level on the console (RunConfig.logging_config). Its warnings are its own
    chatter ("Failed to send resource request ... safe to ignore", with a traceback, when the CPUs are
    busy; a worker group's failure before its restart): they stay in its log files, which keep every
    level; our own lines say what a user needs (resumed at step N, the worker group's new size)."""
    return "INFO" if is_verbose() else "ERROR"


def take_verbose_flag(argv: list[str]) -> list[str]:
    """`--verbose` anywhere on a command line (any command or subcommand): Ray's own logs on the
    console again. Returns the arguments without it."""
    rest = [token for token in argv if token != "--verbose"]
    set_verbose(len(rest) != len(argv))
    return rest
