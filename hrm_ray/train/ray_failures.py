"""Which training failures Ray Train retries: only those a retry can cure.

`FailureConfig(max_failures=N)` restarts the worker group after any worker error. A dead worker or node
deserves that; a UserError (bad config or data, the loop's non-finite abort) fails the same way every
time, so it ends the run at once and reaches the driver as one line. Ray 2.60 has no public hook for
the failure policy: `Trainer` hands its controller `UserErrorsEndTheRun` instead of the default policy.
"""
from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision

from hrm_ray.errors import UserError
from hrm_ray.ray_errors import find_user_error, wrapped_errors

# The logger of Ray Train's "Error in training function:\n<traceback>" (logged by the worker, then shown
# by the driver): for a UserError the driver prints `error: <message>` instead.
RAY_TRAIN_ERROR_LOGGER = "ray.train.v2._internal.util"


class UserErrorsEndTheRun(DefaultFailurePolicy):
    def make_decision(self, training_failed_error) -> FailureDecision:
        if find_user_error(training_failed_error) is not None:
            return FailureDecision.RAISE
        return super().make_decision(training_failed_error)


class Trainer(TorchTrainer):
    """A TorchTrainer whose failure policy never retries a UserError."""

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        if "failure_policy" in controller_init_kwargs:
            controller_init_kwargs["failure_policy"] = UserErrorsEndTheRun(self.run_config.failure_config)
        return super()._initialize_and_run_controller(**controller_init_kwargs)


class _DropUserErrorTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not isinstance(sys.exc_info()[1], UserError)


def quiet_user_errors() -> None:
    """In a Ray Train worker: no traceback in the logs for a UserError (it is raised to the driver as is)."""
    logger = logging.getLogger(RAY_TRAIN_ERROR_LOGGER)
    if not any(isinstance(f, _DropUserErrorTraceback) for f in logger.filters):
        logger.addFilter(_DropUserErrorTraceback())


# How Ray words a worker's death for memory: its memory monitor's kill (OutOfMemoryError, "running low on
# memory"), or a process gone without an error, which Ray's note attributes first to the OS's OOM killer.
_MONITOR_KILL = re.compile(r"OutOfMemoryError|running low on memory")
_SILENT_DEATH = re.compile(r"OOM killer|SIGKILL|worker process has died|health check failed")


def worker_failures(exc: BaseException) -> dict[int, BaseException]:
    """Each failed worker's error by rank, from the WorkerGroupError in `exc`'s chain ({} when none)."""
    pending, seen = [exc], set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        failures = getattr(error, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            return dict(sorted(failures.items()))
        pending += wrapped_errors(error)
    return {}


def memory_death(rank: int, error: BaseException, estimate: str = "") -> str | None:
    """One line for a worker killed for memory (None for any other failure): which worker, where, and what it
    used (Ray's monitor reports it; after an OS kill, the run's estimate)."""
    text = str(error)
    monitor = _MONITOR_KILL.search(text)
    if not monitor and not _SILENT_DEATH.search(text):
        return None
    found = {key: re.search(pattern, text) for key, pattern in (
        ("ip", r"node_ip='([^']+)'|IP: ([\d.]+)"), ("host", r"hostname='([^']+)'"), ("pid", r"pid[=:]\s*(\d+)"),
        ("used", r"memory used=([\d.]+\s*[GMK]B)"), ("node", r"was ([\d.]+\s*[GMK]B / [\d.]+\s*[GMK]B)"))}
    value = {k: next((g for g in m.groups() if g), "") if m else "" for k, m in found.items()}
    where = " on ".join(x for x in (f"pid {value['pid']}" if value["pid"] else "",
                                     " ".join(x for x in (value["host"], value["ip"]) if x)) if x)
    who = f"Ray Train worker rank {rank}" + (f" ({where})" if where else "")
    if monitor:
        used = f": it used {value['used']}" if value["used"] else ""
        node = f", the node {value['node']} in use" if value["node"] else ""
        what = f"was killed by Ray's memory monitor{used}{node}"
    else:
        what = "died without an error: most likely killed by the OS for memory (its OOM killer; see dmesg)"
    hint = f"; the run's estimate: {estimate}" if estimate else ""
    return (f"{who} {what}{hint}; lower --batch_size (with --grad_accum_steps to keep the global batch) or put "
            f"fewer workers on a node")


@contextmanager
def memory_deaths_explained(estimate: str = "") -> Iterator[None]:
    """A Ray Train run whose worker was killed for memory ends with one UserError line saying so."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        for rank, error in worker_failures(exc).items():
            line = memory_death(rank, error, estimate)
            if line is not None:
                raise UserError(line) from None
        raise
