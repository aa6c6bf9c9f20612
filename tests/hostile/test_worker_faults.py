"""Faults from outside a worker: its broker going away under it.

The broker connection is closed here the way Celery's consumer closes it when the broker goes
away (Consumer.on_connection_error_after_connected, Celery's own code) on a real redis-server;
the whole worker riding out a restart is tests/test_queue_broker_restart.py. And a worker asked
to stop while its broker is down stops.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import kombu
import pytest
import redis
from celery.worker.consumer.consumer import Consumer

from sti_worker.app import app  # the worker's process, with its fix to kombu applied
from tests.services import RedisServer, Worker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, appendonly=True)
    yield server
    server.stop()


def _wait_for_more(connection: kombu.Connection) -> None:
    """Every consuming channel of connection with a BRPOP in flight."""
    with contextlib.suppress(TimeoutError):
        connection.drain_events(timeout=0.3)


def _running_step(connection: kombu.Connection) -> kombu.Message:
    """A message delivered and not acknowledged (a step running, late acks) on a connection set
    up as a worker's with a slot free: its task channel and a second one (the remote control's)
    both wait for more."""
    queue = kombu.Queue("sti-test-faults")
    connection.Producer().publish({"step": 1}, routing_key=queue.name, declare=[queue])
    delivered: list[kombu.Message] = []
    tasks = connection.default_channel
    tasks.basic_qos(prefetch_count=2)
    kombu.Consumer(
        tasks, [queue], callbacks=[lambda _, message: delivered.append(message)]
    ).consume()
    connection.drain_events(timeout=5)
    control = connection.channel()
    kombu.Consumer(control, [kombu.Queue("sti-test-faults-control")], callbacks=[]).consume()
    _wait_for_more(connection)
    assert len(delivered) == 1
    assert tasks._in_poll is not None and control._in_poll is not None
    return delivered[0]


def _lose_the_broker(connection: kombu.Connection) -> None:
    """What Celery's consumer does when the connection breaks (per-consumer QoS, as on Redis)."""
    consumer = SimpleNamespace(
        connection=connection, app=app, qos_global=False, max_prefetch_count=2
    )
    Consumer.on_connection_error_after_connected(consumer, ConnectionError("broker gone"))


@pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")
def test_a_broken_connection_closes_with_a_step_running_and_the_step_is_acknowledged_after(
    broker: RedisServer,
) -> None:
    connection = kombu.Connection(broker.url(0))
    step = _running_step(connection)
    broker.stop()

    _lose_the_broker(connection)  # kombu 5.7 alone: AttributeError, "Unrecoverable error"

    broker.start()
    step.ack()  # the step ends once the broker is back, and its message is done with
    client = redis.Redis(port=broker.port)
    assert client.hlen("unacked") == 0
    client.close()


@pytest.mark.slow
@pytest.mark.docker  # a worker looks at its engine when it starts
def test_an_idle_worker_whose_broker_is_down_stops_at_once_on_sigterm(tmp_path: Path) -> None:
    """systemd sends SIGKILL 90 s after SIGTERM; the worker used to try the broker for 97 s."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", appendonly=True)
    worker = Worker(server.url(0), "stop-host", tmp_path, concurrency=2)
    server.stop()
    time.sleep(1)  # its connection lost, Celery trying the broker again

    asked = time.monotonic()
    exit_code = worker.stop(timeout=60)

    assert time.monotonic() - asked < 15, worker.log()[-3000:]  # a hang guard: ~2 s here
    assert exit_code == 0, worker.log()[-3000:]
