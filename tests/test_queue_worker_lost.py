"""A build whose worker dies (SIGKILL: the OOM killer, a host gone) ends with WorkerLost within
a lease and a little, found by any live worker; what it made is removed as soon as a worker
serves its host again, and its tag is free for the next build. Real processes, a short lease."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

from sti.model import BuildRequest
from sti_submit.client import StiClient
from sti_worker.engine.pipeline import workdir_for
from tests.queue_helpers import make_source
from tests.services import RedisServer, Worker

pytestmark = pytest.mark.slow

LEASE_S = 3


@pytest.fixture
def queue_url(redis_server: RedisServer) -> Iterator[str]:
    """A database of its own: reapers of other tests' workers never see these builds."""
    url = redis_server.url(15)
    yield url
    redis.Redis.from_url(url).flushdb()


def _worker(url: str, host: str, log_dir: Path) -> Worker:
    return Worker(url, host, log_dir, STI_LEASE_SECONDS=str(LEASE_S))


def _kill_mid_prepare(client: StiClient, build_id: str, worker: Worker) -> float:
    for line in client.follow(build_id, deadline=time.monotonic() + 60):
        if "prepare: started" in line:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
            return time.monotonic()
    raise AssertionError("prepare never started")


def _wait_until_gone(api: docker.APIClient, build_id: str, timeout_s: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [c["Names"][0] for c in api.containers(all=True) if build_id in c["Names"][0]]
        left += [f"work dir {workdir_for(build_id)}"] if workdir_for(build_id).exists() else []
        left += [t for i in api.images() for t in i.get("RepoTags") or () if build_id in t]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _slow_build(tmp_path: Path, images: dict[str, str], tag: str) -> BuildRequest:
    source = make_source(tmp_path)
    return BuildRequest(str(source), images["sti-fake-slow"], tag, clean=True, env={"SLEEP": "120"})


def test_a_killed_workers_build_ends_worker_lost_and_its_successor_cleans_up(
    queue_url: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    doomed = _worker(queue_url, "crash-host", tmp_path)
    client = StiClient(queue_url)
    successor = None
    try:
        build_id = client.submit_build(_slow_build(tmp_path, images, app_tag))
        killed_at = _kill_mid_prepare(client, build_id, doomed)
        successor = _worker(queue_url, "crash-host", tmp_path)
        result = client.wait(build_id, timeout=120)
        assert result.error is not None and result.error["code"] == "WorkerLost", result
        assert time.monotonic() - killed_at < 2 * LEASE_S + 15
        assert result.tag == app_tag and result.image_id is None
        assert _wait_until_gone(api, build_id) == []
        again = BuildRequest(str(make_source(tmp_path / "next")), images["sti-fake"], app_tag)
        assert client.wait(client.submit_build(again), timeout=120).success  # the tag is free
    finally:
        client.close()
        for worker in (doomed, successor):
            if worker is not None and worker.process.poll() is None:
                worker.stop()


def test_a_build_whose_host_is_gone_is_ended_by_another_host(
    queue_url: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    doomed = _worker(queue_url, "gone-host", tmp_path)
    client = StiClient(queue_url)
    workers = []
    try:
        build_id = client.submit_build(_slow_build(tmp_path, images, app_tag))
        _kill_mid_prepare(client, build_id, doomed)
        workers.append(_worker(queue_url, "other-host", tmp_path))
        result = client.wait(build_id, timeout=120)
        assert result.error is not None and result.error["code"] == "WorkerLost", result
        assert result.host == "gone-host"
        # the host comes back: its queue still holds the clean-up of what the build left
        workers.append(_worker(queue_url, "gone-host", tmp_path))
        assert _wait_until_gone(api, build_id) == []
    finally:
        client.close()
        for worker in (doomed, *workers):
            if worker.process.poll() is None:
                worker.stop()
