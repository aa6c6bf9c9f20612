"""Workers that stop and steps that run out of time: builds still end in a clear final state."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import docker
import pytest

from sti.model import BuildRequest
from sti_submit.client import StiClient
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
        # it drained this queue (its --broker), not the default localhost one
        assert "could not drain" not in worker.log()
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


def test_a_starting_worker_removes_what_a_crashed_build_left(
    api: docker.APIClient,
    redis_server: RedisServer,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    url = redis_server.url(5)
    lease = {"STI_LEASE_SECONDS": "3"}
    worker = Worker(url, "crashing-host", tmp_path, concurrency=1, **lease)
    client = StiClient(url)
    try:
        request = BuildRequest(
            str(make_source(tmp_path)), images["sti-fake-slow"], app_tag, method="run"
        )
        build_id = client.submit_build(request)
        for line in client.follow(build_id):
            if line.startswith("prepare: started"):
                break
        os.killpg(worker.process.pid, signal.SIGKILL)  # the whole worker, mid-build
        worker.process.wait()
        left = [
            c["Names"][0] for c in api.containers(all=True, filters={"name": f"^/sti-{build_id}-"})
        ]
        assert left, "the killed build should have left its prepare container"
        assert Path(tempfile.gettempdir(), f"sti-{build_id}").exists()
        time.sleep(4)  # the dead build's lease runs out
        successor = Worker(url, "crashing-host", tmp_path, concurrency=1, **lease)
        successor.stop()
        assert not api.containers(all=True, filters={"name": f"^/sti-{build_id}-"})
        assert not Path(tempfile.gettempdir(), f"sti-{build_id}").exists()
    finally:
        client.close()
        worker.stop()
