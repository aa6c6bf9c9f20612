"""Celery's failures as sti errors, in one place: the client reading a task's result, the worker
ending a build whose chain broke, the engine interrupted by a step's soft time limit.

Matched by class name, so neither side imports Celery to read them."""

from __future__ import annotations

from .errors import Cancelled, InternalError, StiError, TimedOut

_TIME_LIMITS = ("TimeLimitExceeded", "SoftTimeLimitExceeded")
_REVOKED = ("TaskRevokedError", "Terminated")


def is_time_limit(failure: object) -> bool:
    return type(failure).__name__ in _TIME_LIMITS


def error_for_failure(failure: object) -> StiError:
    """The sti error a task's failure (the exception its result holds) stands for."""
    if isinstance(failure, StiError):
        return failure
    name = type(failure).__name__
    if name in _TIME_LIMITS:
        return TimedOut("a build step ran out of time (STI_STEP_TIME_LIMIT)")
    if name in _REVOKED:
        return Cancelled("the build was revoked")
    return InternalError(f"the build failed: {name}: {failure}")
