"""Which training failures Ray Train retries: only those a retry can cure.

`FailureConfig(max_failures=N)` restarts the worker group after any worker error. A dead worker or node
deserves that; a UserError (bad config or data, the loop's non-finite abort) fails the same way every
time, so it ends the run at once and reaches the driver as one line. Ray 2.60 has no public hook for
the failure policy: `Trainer` hands its controller `UserErrorsEndTheRun` instead of the default policy.
"""
from __future__ import annotations

import logging
import sys

from ray.train.torch import TorchTrainer
from ray.train.v2._internal.execution.failure_handling import DefaultFailurePolicy, FailureDecision

from hrm_ray.data.ray_errors import find_user_error
from hrm_ray.errors import UserError

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
