"""One exception type per error code of the public contract.

Raised where the problem is known; turned into the result object in one place (pipeline).
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar

from .lines import TEXT_MAX_BYTES, cut_line


class ExitCode(IntEnum):
    """Exit codes of sti-submit, as listed in CONTRACT.md."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    INFRASTRUCTURE = 3
    TIMED_OUT_OR_CANCELLED = 4


class StiError(Exception):
    """Base of every sti error: a stable code and a message a user can act on."""

    code: ClassVar[str] = "StiError"
    exit_code: ClassVar[ExitCode] = ExitCode.INFRASTRUCTURE

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        # an error quotes what it was given (a label, the engine's answer, a build's output
        # lines), and goes into results, task messages and logs: each text held to a cap
        message = cut_line(message, TEXT_MAX_BYTES)
        super().__init__(message)
        self.message = message
        self.details = [cut_line(line, TEXT_MAX_BYTES) for line in details or []]

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class DockerConnectionFailed(StiError):
    code = "DockerConnectionFailed"


class NoSuchBaseImage(StiError):
    code = "NoSuchBaseImage"


class NoSuchRuntimeImage(StiError):
    code = "NoSuchRuntimeImage"


class PullImageFailed(StiError):
    code = "PullImageFailed"


class PushImageFailed(StiError):
    code = "PushImageFailed"


class SaveArtifactsFailed(StiError):
    code = "SaveArtifactsFailed"
    exit_code = ExitCode.FAILED


class CreateDockerfileFailed(StiError):
    code = "CreateDockerfileFailed"
    exit_code = ExitCode.FAILED


class CreateContainerFailed(StiError):
    code = "CreateContainerFailed"


class InvalidBuildMethod(StiError):
    code = "InvalidBuildMethod"
    exit_code = ExitCode.BAD_INPUT


class BuildFailed(StiError):
    code = "BuildFailed"
    exit_code = ExitCode.FAILED


class BuildStepFailed(BuildFailed):
    """A step of a docker build (a RUN) exited non-zero: which command, with which code."""

    def __init__(
        self, message: str, *, command: str, exit_code: int, details: list[str] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.command = command
        self.exit_code = exit_code


class CommitContainerFailed(StiError):
    code = "CommitContainerFailed"
    exit_code = ExitCode.FAILED


class InvalidImage(StiError):
    """The image exists but lacks what the sti protocol needs."""

    code = "InvalidImage"
    exit_code = ExitCode.FAILED


class TagImageFailed(StiError):
    code = "TagImageFailed"


class InvalidInput(StiError):
    code = "InvalidInput"
    exit_code = ExitCode.BAD_INPUT


class SourceFetchFailed(StiError):
    code = "SourceFetchFailed"


class Cancelled(StiError):
    code = "Cancelled"
    exit_code = ExitCode.TIMED_OUT_OR_CANCELLED


class TimedOut(StiError):
    code = "TimedOut"
    exit_code = ExitCode.TIMED_OUT_OR_CANCELLED


class BrokerUnreachable(StiError):
    code = "BrokerUnreachable"


class InternalError(StiError):
    code = "InternalError"


class WorkerLost(StiError):
    """The worker running the build died (killed, its host gone) before the build ended."""

    code = "WorkerLost"


_BY_CODE: dict[str, type[StiError]] = {
    cls.code: cls
    for cls in (
        DockerConnectionFailed,
        NoSuchBaseImage,
        NoSuchRuntimeImage,
        PullImageFailed,
        PushImageFailed,
        SaveArtifactsFailed,
        CreateDockerfileFailed,
        CreateContainerFailed,
        InvalidBuildMethod,
        BuildFailed,
        CommitContainerFailed,
        InvalidImage,
        TagImageFailed,
        InvalidInput,
        SourceFetchFailed,
        Cancelled,
        TimedOut,
        BrokerUnreachable,
        InternalError,
        WorkerLost,
    )
}


def error_class(code: str) -> type[StiError]:
    """The exception type for an error code; unknown codes map to the base type."""
    return _BY_CODE.get(code, StiError)


def exit_code_for(code: str | None, success: bool) -> ExitCode:
    """The sti-submit exit code for a finished result."""
    if success:
        return ExitCode.OK
    if code is None:
        return ExitCode.FAILED
    return error_class(code).exit_code
