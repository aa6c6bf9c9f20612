"""Running the engine in this process (--local): no broker, the local Docker engine.

Part of the worker install (`sti[worker]`): sti-submit imports it only for --local.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from sti.errors import StiError
from sti.model import BuildRequest, Result, ValidateRequest
from sti.settings import Settings
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_build, run_validate
from sti_worker.engine.sources import SourcePolicy, Sources

LogSink = Callable[[str], None]
# the user's own machine: its paths and file:// git URLs are theirs to use
_OWN_MACHINE = Sources(SourcePolicy(allow_file_urls=True, allow_local_paths=True))


def _docker_host(docker_url: str | None) -> DockerHost:
    settings = Settings.from_env()
    return DockerHost(
        docker_url,
        builder=settings.builder,
        build_cache_keep_bytes=settings.build_cache_keep_bytes,
    )


def build_locally(request: BuildRequest, docker_url: str | None, sink: LogSink) -> Result:
    try:
        docker = _docker_host(docker_url)
    except StiError as error:
        return Result.from_error("build", request.build_id, error, host=socket.gethostname())
    try:
        return run_build(docker, request, sink, socket.gethostname(), sources=_OWN_MACHINE)
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
