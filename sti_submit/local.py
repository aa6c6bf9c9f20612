"""Running the engine in this process (--local): no broker, the local Docker engine.

Imported only when --local is used, so the laptop side needs no docker-py otherwise.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.errors import StiError
from sti_worker.engine.pipeline import run_build, run_validate
from sti_worker.engine.requests import BuildRequest, Result, ValidateRequest
from sti_worker.engine.sources import SourcePolicy, configure, current_policy
from sti_worker.settings import Settings

LogSink = Callable[[str], None]


def _docker_host(docker_url: str | None) -> DockerHost:
    settings = Settings.from_env()
    return DockerHost(
        docker_url,
        builder=settings.builder,
        build_cache_keep_bytes=settings.build_cache_keep_bytes,
    )


def build_locally(request: BuildRequest, docker_url: str | None, sink: LogSink) -> Result:
    # the user's own machine: file:// git URLs are theirs to use
    configure(
        SourcePolicy(allow_file_urls=True, allow_local_paths=True, limits=current_policy().limits)
    )
    try:
        docker = _docker_host(docker_url)
    except StiError as error:
        return Result.from_error("build", request.build_id, error, host=socket.gethostname())
    try:
        return run_build(docker, request, sink, socket.gethostname())
    finally:
        docker.close()


def validate_locally(request: ValidateRequest, docker_url: str | None, sink: LogSink) -> Result:
    try:
        docker = _docker_host(docker_url)
    except StiError as error:
        return Result.from_error("validate", request.build_id, error, host=socket.gethostname())
    try:
        return run_validate(docker, request, sink, socket.gethostname())
    finally:
        docker.close()
