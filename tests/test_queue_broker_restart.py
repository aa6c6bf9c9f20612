"""The broker restarts while a build runs (redis-server with AOF, down for a few seconds): the
worker rides it out, the running build ends with a result, and the next build runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.queue_helpers import make_source
from tests.services import RedisServer, Worker

pytestmark = pytest.mark.slow


def test_a_worker_rides_out_a_broker_restart_during_a_build(
    images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    (tmp_path / "redis").mkdir()
    broker = RedisServer(tmp_path / "redis", appendonly=True)
    worker = Worker(broker.url(0), "restart-host", tmp_path, concurrency=1)
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

        after = BuildRequest(str(make_source(tmp_path / "next")), images["sti-fake"], app_tag)
        assert client.wait(client.submit_build(after), timeout=120).success
        assert "Unrecoverable error" not in worker.log()
    finally:
        client.close()
        worker.stop()
        broker.stop()
