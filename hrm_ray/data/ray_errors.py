"""Surface a UserError raised inside a Ray task as the UserError itself (one clean line)."""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from hrm_ray.errors import UserError

_REMOTE_USER_ERROR = re.compile(r"hrm_ray\.errors\.UserError: (.+)")


def _find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError in an exception chain; an actor's error reaches the driver only as its
    remote traceback's text, so that is searched last."""
    text = str(exc)
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, UserError):
            return exc
        cause = getattr(exc, "cause", None)  # RayTaskError keeps the original here
        if isinstance(cause, BaseException) and _find_user_error(cause):
            return _find_user_error(cause)
        exc = exc.__cause__ or exc.__context__
    found = _REMOTE_USER_ERROR.search(text)
    return UserError(found.group(1).strip()) if found else None


@contextmanager
def user_errors_from_ray() -> Iterator[None]:
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        found = _find_user_error(exc)
        if found is None:
            raise
        raise UserError(str(found)) from None
