"""Running the engine in this process (--local): no broker, the local Docker engine.

Part of the worker install (`sti[worker]`): sti-submit imports it only for --local.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from sti.errors import StiError
from sti.model import BuildRequest, Result, UsageRequest, ValidateRequest
from sti.settings import Settings
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.fact_cache import FactCache
from sti_worker.engine.fact_cache import default_directory as fact_cache_directory
from sti_worker.engine.pipeline import run_build, run_usage, run_validate
from sti_worker.engine.sandbox import Sandbox
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
        sandbox=Sandbox.from_settings(settings),
        source_images_keep=settings.source_images_keep,
        fact_cache=FactCache(fact_cache_directory()),
    )


def build_locally(request: BuildRequest, docker_url: str | None, sink: LogSink) -> Result:
    return _on_the_engine(
        "build",
        request.build_id,
        docker_url,
        lambda docker, host: run_build(docker, request, sink, host, sources=_OWN_MACHINE),
    )


def validate_locally(request: ValidateRequest, docker_url: str | None, sink: LogSink) -> Result:
    return _on_the_engine(
        "validate",
        request.build_id,
        docker_url,
        lambda docker, host: run_validate(docker, request, sink, host),
    )


def usage_locally(request: UsageRequest, docker_url: str | None, sink: LogSink) -> Result:
    return _on_the_engine(
        "usage",
        request.build_id,
        docker_url,
        lambda docker, host: run_usage(docker, request, sink, host, sources=_OWN_MACHINE),
    )


def _on_the_engine(
    kind: str, build_id: str, docker_url: str | None, run: Callable[[DockerHost, str], Result]
) -> Result:
    """run on this machine's engine; an engine it cannot reach is the result's error."""
    host = socket.gethostname()
    try:
        docker = _docker_host(docker_url)
    except StiError as error:
        return Result.from_error(kind, build_id, error, host=host)
    try:
        return run(docker, host)
    finally:
        docker.close()
