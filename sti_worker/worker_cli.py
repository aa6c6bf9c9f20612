"""sti-worker: run a Celery worker for this Docker host, with a graceful SIGTERM.

The settings are checked first: one outside its range stops sti-worker with exit code 2 and a
line naming it. On SIGTERM the worker stops claiming new builds, lets the builds it runs finish
(their steps come on the host queue) for up to --grace seconds, then shuts Celery down warm,
then cold. With the broker unreachable the host's builds cannot be seen: Celery's warm shutdown
then finishes the steps it runs (for the rest of --grace), and an idle worker stops at once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from types import FrameType

import click

from sti.environment import DEFAULT_BROKER_URL, InvalidSetting
from sti.errors import ExitCode
from sti.redaction import redact
from sti.wire import SHARED_QUEUE, host_queue

_COLD_AFTER_S = 30


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--concurrency", type=click.IntRange(1), default=2, show_default=True)
@click.option(
    "--host-id", envvar="STI_HOST_ID", default=socket.gethostname, show_default="host name"
)
@click.option("--docker-url", envvar="DOCKER_HOST", default=None, help="Docker engine URL.")
@click.option("--broker", envvar="STI_BROKER_URL", default=DEFAULT_BROKER_URL)
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--grace",
    type=click.IntRange(0),
    default=600,
    show_default=True,
    help="Seconds running builds get to finish after SIGTERM.",
)
@click.option("--node-name", default=None, help="Celery node name (default: unique per process).")
def main(
    concurrency: int,
    host_id: str,
    docker_url: str | None,
    broker: str,
    loglevel: str,
    grace: int,
    node_name: str | None,
) -> None:
    """Consume sti.builds and this host's queue sti.host.<HOST_ID>."""
    # this process reads them too, when it drains the host on SIGTERM (settings come from the
    # environment): without them it drained against localhost and gave up after seconds
    os.environ.update(STI_HOST_ID=host_id, STI_BROKER_URL=broker)
    if docker_url:
        os.environ["DOCKER_HOST"] = docker_url
    _check_settings()
    env = dict(os.environ)
    node = node_name or f"sti-{host_id}-{os.getpid()}@{socket.gethostname()}"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "sti_worker",
        "worker",
        "-Q",
        f"{SHARED_QUEUE},{host_queue(host_id)}",
        "-c",
        str(concurrency),
        "-n",
        node,
        "--loglevel",
        loglevel,
        "-E",
        # sti's workers coordinate through Redis keys, not worker-to-worker messages; gossip's
        # restart after a broker outage fails in kombu (AttributeError on a closed connection)
        # and mingle costs a second at every start
        "--without-gossip",
        "--without-mingle",
    ]
    child = subprocess.Popen(command, env=env)
    stopping = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            threading.Thread(
                target=_drain_then_stop, args=(child, node, host_id, grace), daemon=True
            ).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    sys.exit(child.wait())


def _check_settings() -> None:
    """Every setting in its range, before Celery starts (which would print a traceback)."""
    from sti.settings import Settings

    try:
        _check_docker_url(Settings.from_env().docker_url)
    except InvalidSetting as error:
        click.echo(f"sti-worker: {error.message}", err=True)
        sys.exit(ExitCode.BAD_INPUT)


def _check_docker_url(url: str | None) -> None:
    """DOCKER_HOST as docker-py reads it (unix:///path, tcp://host:port, ssh://host, ...)."""
    from docker.errors import DockerException
    from docker.utils import parse_host

    try:
        parse_host(url)
    except (DockerException, ValueError) as error:
        raise InvalidSetting(
            f"DOCKER_HOST={redact(url or '')!r} (--docker-url) is not a Docker engine URL: {error}"
        ) from error


def _drain_then_stop(child: subprocess.Popen[bytes], node: str, host_id: str, grace: int) -> None:
    deadline = time.monotonic() + grace
    seen = _wait_for_host_builds(child, node, host_id, deadline)
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    # unseen builds get the rest of the grace from Celery's warm shutdown, which finishes the
    # steps it runs; an idle worker's is over in a second
    warm_s = _COLD_AFTER_S if seen else max(deadline - time.monotonic(), _COLD_AFTER_S)
    try:
        child.wait(timeout=warm_s)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGQUIT)


def _wait_for_host_builds(
    child: subprocess.Popen[bytes], node: str, host_id: str, deadline: float
) -> bool:
    """Stop claiming builds and wait until those running on this host end (or the deadline);
    False when the broker could not be asked."""
    from sti.leases import HostSlots

    from .app import app, settings
    from .brief_redis import brief_redis_client

    client = brief_redis_client(settings.broker_url)
    try:
        slots = HostSlots(client, host_id, settings.lease_s)
        slots.running()  # the broker answers at once, or the builds cannot be seen
        app.control.cancel_consumer(SHARED_QUEUE, destination=[node], reply=True, timeout=5)
        while slots.running() and time.monotonic() < deadline and child.poll() is None:
            time.sleep(1)
        return True
    except Exception as error:  # draining is best effort; stopping is not
        click.echo(f"sti-worker: could not drain before stopping: {error}", err=True)
        return False
    finally:
        client.close()
