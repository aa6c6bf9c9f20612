"""Running the engine in this process (--local): no broker, the local Docker engine.

Part of the worker install (`sti[worker]`): sti-submit imports it only for --local.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress

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
        sink,
        lambda docker, host, say: run_build(docker, request, say, host, sources=_OWN_MACHINE),
    )


def validate_locally(request: ValidateRequest, docker_url: str | None, sink: LogSink) -> Result:
    return _on_the_engine(
        "validate",
        request.build_id,
        docker_url,
        sink,
        lambda docker, host, say: run_validate(docker, request, say, host),
    )


def usage_locally(request: UsageRequest, docker_url: str | None, sink: LogSink) -> Result:
    return _on_the_engine(
        "usage",
        request.build_id,
        docker_url,
        sink,
        lambda docker, host, say: run_usage(docker, request, say, host, sources=_OWN_MACHINE),
    )


def _on_the_engine(
    kind: str,
    build_id: str,
    docker_url: str | None,
    sink: LogSink,
    run: Callable[[DockerHost, str, LogSink], Result],
) -> Result:
    """run on this machine's engine, saying its lines to sink until interrupted (what a build
    stopped by us says then, a prepare "killed", is not news); an engine it cannot reach is the
    result's error."""
    host = socket.gethostname()
    try:
        docker = _docker_host(docker_url)
    except StiError as error:
        return Result.from_error(kind, build_id, error, host=host)
    interrupted = threading.Event()

    def say(line: str) -> None:
        if not interrupted.is_set():
            sink(line)

    def stop() -> None:
        interrupted.set()
        # best effort, tried again each slice: an engine that fails it must not hold the interrupt
        with suppress(Exception):
            docker.abort(build_id)

    try:
        return _interruptible(lambda: run(docker, host, say), stop)
    finally:
        docker.close()


_SLICE_S = 0.2


def _interruptible(work: Callable[[], Result], stop: Callable[[], None]) -> Result:
    """work() on a thread of its own while this thread, the main one, waits in short slices.
    Python runs a signal's handler (Ctrl-C; SIGTERM and SIGHUP, which sti-submit makes an
    interrupt) in the main thread only, and a signal that comes just before a blocking read
    waits for that read to return: a build reading the output of a quiet prepare held a SIGTERM
    for as long as prepare stayed quiet. On an interrupt: stop() (the build's containers
    killed, its streams cut) again each slice until work has cleaned up and ended, then the
    interrupt goes on; a second interrupt ends the wait. (The wait is on an event: Python
    3.11's Thread.join, interrupted, takes the thread for ended while it still runs.)"""
    outcome: list[Result] = []
    failure: list[BaseException] = []
    ended = threading.Event()

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as error:  # raised again in the main thread
            failure.append(error)
        finally:
            ended.set()

    threading.Thread(target=run, name="sti-local-build", daemon=True).start()
    try:
        while not ended.wait(_SLICE_S):
            pass
    except KeyboardInterrupt:
        while not ended.is_set():  # a container started meanwhile is killed in the next slice
            stop()
            ended.wait(_SLICE_S)
        raise
    if failure:
        raise failure[0]
    return outcome[0]
