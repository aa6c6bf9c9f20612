"""Workers that stop and steps that run out of time: builds still end in a clear final state."""

from __future__ import annotations

import signal
from pathlib import Path

import docker
import pytest

from sti_submit.client import StiClient
from sti_worker.engine.requests import BuildRequest
from tests.queue_helpers import make_source
from tests.services import RedisServer, Worker

pytestmark = pytest.mark.slow


def test_sigterm_lets_the_running_build_finish_then_stops(
    redis_server: RedisServer, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    url = redis_server.url(3)
    worker = Worker(url, "draining-host", tmp_path, concurrency=1)
    client = StiClient(url)
    try:
        request = BuildRequest(
            str(make_source(tmp_path)), images["sti-fake-slow"], app_tag, env={"SLEEP": "3"}
        )
        build_id = client.submit_build(request)
        for line in client.follow(build_id):
            if line.startswith("prepare: started"):
                break
        worker.process.send_signal(signal.SIGTERM)
        result = client.result(build_id, timeout=60)
        assert result.success, result.messages
        assert worker.process.wait(timeout=60) == 0
    finally:
        client.close()
        worker.stop()


def test_a_step_over_its_time_limit_ends_the_build_timed_out(
    api: docker.APIClient,
    redis_server: RedisServer,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    url = redis_server.url(4)
    worker = Worker(url, "strict-host", tmp_path, concurrency=1, STI_STEP_TIME_LIMIT="4")
    client = StiClient(url)
    try:
        request = BuildRequest(str(make_source(tmp_path)), images["sti-fake-slow"], app_tag)
        result = client.wait(client.submit_build(request), timeout=60)
    finally:
        client.close()
        worker.stop()
    assert result.error_code == "TimedOut", result.messages
    assert not api.images(name=app_tag)
