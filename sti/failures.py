"""Celery's failures as sti errors, in one place: the client reading a task's stored failure, the
worker ending a build whose chain broke, the engine interrupted by a step's soft time limit.

Matched by class name, so neither side imports Celery to read them."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import Cancelled, InternalError, StiError, TimedOut, error_class

_TIME_LIMITS = ("TimeLimitExceeded", "SoftTimeLimitExceeded")
_REVOKED = ("TaskRevokedError", "Terminated")


def is_time_limit(failure: object) -> bool:
    return type(failure).__name__ in _TIME_LIMITS


def error_for_failure(failure: object) -> StiError:
    """The sti error a task's failure stands for: the exception its result holds, or the
    {exc_type, exc_message} the result backend stores for it."""
    if isinstance(failure, StiError):
        return failure
    if isinstance(failure, Mapping) and isinstance(failure.get("exc_type"), str):
        return _error_named(failure["exc_type"], _message_of(failure.get("exc_message")))
    return _error_named(type(failure).__name__, str(failure))


def _error_named(name: str, message: str) -> StiError:
    if name in _TIME_LIMITS:
        return TimedOut("a build step ran out of time (STI_STEP_TIME_LIMIT)")
    if name in _REVOKED:
        return Cancelled("the build was revoked")
    known = error_class(name)
    if known is not StiError:
        return known(message)
    return InternalError(f"the build failed: {name}: {message}")


def _message_of(stored: object) -> str:
    if isinstance(stored, list | tuple):
        return " ".join(str(part) for part in stored)
    return "" if stored is None else str(stored)
