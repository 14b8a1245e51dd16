"""Surface a UserError raised inside a Ray task, actor or Ray Train worker as the UserError itself (one
clean line). UserError subclasses (e.g. the training loop's NonFiniteLossError) count too."""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager

from hrm_ray.errors import UserError

_REMOTE_ERROR = re.compile(r"(?:^|\s)(hrm_ray(?:\.\w+)+): (.+)$", re.MULTILINE)
# Where Ray keeps the original of an exception it wraps: RayTaskError.cause, Ray Train's
# UserExceptionWithTraceback._base_exc, ControllerError.controller_failure.
_WRAPPED_ATTRS = ("cause", "_base_exc", "controller_failure")


def _wrapped(exc: BaseException) -> list[BaseException]:
    """The exceptions `exc` carries: its cause/context, what Ray wraps, a WorkerGroupError's worker failures."""
    found = [getattr(exc, name, None) for name in _WRAPPED_ATTRS] + [exc.__cause__, exc.__context__]
    failures = getattr(exc, "worker_failures", None)
    if isinstance(failures, dict):
        found += [failures[rank] for rank in sorted(failures)]
    return [e for e in found if isinstance(e, BaseException)]


def wrapped_errors(exc: BaseException) -> list[BaseException]:
    """The exceptions `exc` carries (what Ray wraps, causes, a WorkerGroupError's worker failures)."""
    return _wrapped(exc)


def _in_chain(exc: BaseException, seen: set[int]) -> UserError | None:
    if id(exc) in seen:
        return None
    seen.add(id(exc))
    if isinstance(exc, UserError):
        return exc
    for inner in _wrapped(exc):
        found = _in_chain(inner, seen)
        if found is not None:
            return found
    return None


def _user_error_class(dotted: str) -> type[UserError] | None:
    module_name, _, name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return cls if isinstance(cls, type) and issubclass(cls, UserError) else None


def _in_text(text: str) -> UserError | None:
    """A UserError named in a remote traceback's text (an actor's error may reach the driver only so)."""
    for match in _REMOTE_ERROR.finditer(text):
        if _user_error_class(match.group(1)) is not None:
            return UserError(match.group(2).strip())
    return None


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError in an exception chain (Ray's wrappers included), else one named in its text."""
    if exc is None:
        return None
    found = _in_chain(exc, set())
    if found is not None:
        return found
    texts = [str(exc)] + [str(e) for e in _wrapped(exc)]
    return next((e for e in map(_in_text, texts) if e is not None), None)


@contextmanager
def user_errors_from_ray() -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        found = find_user_error(exc)
        if found is None:
            raise
        raise UserError(str(found)) from None
