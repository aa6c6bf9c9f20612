"""Celery's failures as sti errors, matched by class name: local classes named like Celery's
stand in for them, so this needs no Celery."""

from __future__ import annotations

import pytest

from sti.errors import BuildFailed, Cancelled, InternalError, InvalidInput, StiError, TimedOut
from sti.failures import error_for_failure, is_time_limit


class TimeLimitExceeded(Exception):
    pass


class SoftTimeLimitExceeded(Exception):
    pass


class TaskRevokedError(Exception):
    pass


class Terminated(Exception):
    pass


@pytest.mark.parametrize("failure", [TimeLimitExceeded(60), SoftTimeLimitExceeded()])
def test_a_time_limit_is_timed_out(failure: Exception) -> None:
    error = error_for_failure(failure)
    assert (error.code, error.exit_code) == ("TimedOut", TimedOut.exit_code)
    assert "STI_STEP_TIME_LIMIT" in error.message
    assert is_time_limit(failure)


@pytest.mark.parametrize("failure", [TaskRevokedError("revoked"), Terminated(15)])
def test_a_revoked_or_terminated_task_is_cancelled(failure: Exception) -> None:
    error = error_for_failure(failure)
    assert error.code == Cancelled.code
    assert not is_time_limit(failure)


@pytest.mark.parametrize(
    "failure", [InvalidInput("bad tag"), BuildFailed("prepare exited 3"), TimedOut("already")]
)
def test_an_sti_error_passes_through_unchanged(failure: StiError) -> None:
    assert error_for_failure(failure) is failure


def test_anything_else_is_an_internal_error_naming_it() -> None:
    error = error_for_failure(KeyError("missing"))
    assert error.code == InternalError.code
    assert error.message == "the build failed: KeyError: 'missing'"


def test_a_failure_that_is_not_an_exception_is_an_internal_error_too() -> None:
    error = error_for_failure("worker lost")
    assert error.code == InternalError.code
    assert "str: worker lost" in error.message


def test_a_subclass_of_a_time_limit_is_not_taken_for_one() -> None:
    """Matched by exact class name, as Celery's classes are named."""

    class MyTimeLimitExceeded(TimeLimitExceeded):
        pass

    assert error_for_failure(MyTimeLimitExceeded()).code == InternalError.code
