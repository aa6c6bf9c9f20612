"""The broker restarts (redis-server with AOF, down for a few seconds) while a build runs and
while the worker is idle: the worker rides both out, the running build ends with a result, and
the worker process serves the next build.

Two slots, as the Procfile starts it: a slot stays free while a build runs, so the broker
connection that breaks has a read in flight (what kombu 5.7 failed to close:
sti_worker/kombu_fixes.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.queue_helpers import make_source
from tests.services import RedisServer, Worker

pytestmark = pytest.mark.slow


def test_a_worker_rides_out_broker_restarts_during_a_build_and_while_idle(
    images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    (tmp_path / "redis").mkdir()
    broker = RedisServer(tmp_path / "redis", appendonly=True)
    worker = Worker(broker.url(0), "restart-host", tmp_path, concurrency=2)
    client = StiClient(broker.url(0))
    try:
        slow = BuildRequest(
            str(make_source(tmp_path)), images["sti-fake-slow"], app_tag, env={"SLEEP": "6"}
        )
        build_id = client.submit_build(slow)
        for line in client.follow(build_id):
            if line.startswith("prepare: started"):
                break
        broker.restart(down_s=3)

        result = client.result(build_id, timeout=120)
        assert result.success, result.messages
        assert worker.process.poll() is None, worker.log()[-3000:]

        time.sleep(1)  # idle, its connection waiting for the next message
        broker.restart(down_s=3)

        client.close()
        client = StiClient(broker.url(0))  # as the next sti-submit, a process of its own
        after = BuildRequest(str(make_source(tmp_path / "next")), images["sti-fake"], app_tag)
        assert client.wait(client.submit_build(after), timeout=120).success
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert "Unrecoverable error" not in worker.log()
    finally:
        client.close()
        worker.stop()
        broker.stop()
