"""A build whose worker dies (SIGKILL: the OOM killer, a host gone) is found by any live worker
within a lease and a little: it runs again from the start when its source can be fetched
anywhere, else (or when it loses its worker again) it ends with WorkerLost; what it made is
removed as soon as a worker serves its host again, and its tag is free for the next build.
Real processes, a short lease."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

from sti.celery_protocol import task_message
from sti.model import BuildRequest
from sti.wire import BUILD_TASK, SHARED_QUEUE
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


def _kill_mid_prepare(client: StiClient, build_id: str, worker: Worker, nth: int = 1) -> float:
    """SIGKILL the worker (and its pool) when prepare has started for the nth time."""
    started = 0
    for line in client.follow(build_id, deadline=time.monotonic() + 90):
        if "prepare: started" in line:
            started += 1
            if started == nth:
                os.killpg(worker.process.pid, signal.SIGKILL)
                worker.process.wait()
                return time.monotonic()
    raise AssertionError(f"prepare never started {nth} times")


def _log(client: StiClient, build_id: str) -> list[str]:
    return list(client.follow(build_id, follow=False))


def _submit_worker_path(client: StiClient, request: BuildRequest) -> str:
    """Submit a path of the worker's machine as it is (sti-submit would upload it)."""
    kwargs = request.to_json()
    build_id = kwargs.pop("build_id")
    client.redis.lpush(SHARED_QUEUE, task_message(BUILD_TASK, build_id, kwargs, SHARED_QUEUE))
    return build_id


def _wait_until_gone(api: docker.APIClient, build_id: str, timeout_s: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = [c["Names"][0] for c in api.containers(all=True) if build_id in c["Names"][0]]
        left += [f"work dir {workdir_for(build_id)}"] if workdir_for(build_id).exists() else []
        left += [t for i in api.images() for t in i.get("RepoTags") or () if build_id in t]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _slow_build(
    tmp_path: Path, images: dict[str, str], tag: str, sleep_s: int = 120
) -> BuildRequest:
    source = make_source(tmp_path)
    return BuildRequest(
        str(source), images["sti-fake-slow"], tag, clean=True, env={"SLEEP": str(sleep_s)}
    )


def _stop(*workers: Worker | None) -> None:
    for worker in workers:
        if worker is not None and worker.process.poll() is None:
            worker.stop()


def test_a_killed_workers_build_runs_again_on_its_successor(
    queue_url: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    doomed = _worker(queue_url, "crash-host", tmp_path)
    client = StiClient(queue_url)
    successor = None
    try:
        build_id = client.submit_build(_slow_build(tmp_path, images, app_tag, sleep_s=4))
        killed_at = _kill_mid_prepare(client, build_id, doomed)
        successor = _worker(queue_url, "crash-host", tmp_path)
        result = client.wait(build_id, timeout=120)
        assert result.success, result.messages
        assert result.host == "crash-host" and result.build_id == build_id
        assert time.monotonic() - killed_at < 2 * LEASE_S + 30
        lines = _log(client, build_id)
        again = "building it again from the start (attempt 2)"
        assert sum(again in line for line in lines) == 1, lines
        assert sum("prepare: started" in line for line in lines) == 2
        assert api.inspect_image(app_tag)["Id"] == result.image_id
        assert _wait_until_gone(api, build_id) == []
    finally:
        client.close()
        _stop(doomed, successor)


def test_a_build_from_a_workers_own_path_ends_worker_lost_at_once(
    queue_url: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """Another host may not have that path: nothing to build again from."""
    doomed = Worker(
        queue_url,
        "path-host",
        tmp_path,
        STI_LEASE_SECONDS=str(LEASE_S),
        STI_ALLOW_LOCAL_SOURCES="1",
    )
    client = StiClient(queue_url)
    successor = None
    try:
        build_id = _submit_worker_path(client, _slow_build(tmp_path, images, app_tag))
        killed_at = _kill_mid_prepare(client, build_id, doomed)
        successor = _worker(queue_url, "path-host", tmp_path)
        result = client.wait(build_id, timeout=120)
        assert result.error is not None and result.error["code"] == "WorkerLost", result
        assert time.monotonic() - killed_at < 2 * LEASE_S + 15
        assert not any("building it again" in line for line in _log(client, build_id))
        assert _wait_until_gone(api, build_id) == []
    finally:
        client.close()
        _stop(doomed, successor)


def test_ten_workers_killed_in_a_row_leave_nothing_behind(
    queue_url: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """Each build loses its worker on one host, runs again on the other, loses that worker too
    and ends WorkerLost: ten SIGKILLs; then, once each host is served again, not a container,
    work dir or tag of any of them is left, and the tag is free."""
    client = StiClient(queue_url)
    hosts = ["loop-a", "loop-b"]
    worker = _worker(queue_url, hosts[0], tmp_path)
    other = None
    kills = 0
    build_ids = []
    try:
        for _ in range(5):
            build_id = client.submit_build(_slow_build(tmp_path / f"s{kills}", images, app_tag))
            build_ids.append(build_id)
            for nth in (1, 2):
                _kill_mid_prepare(client, build_id, worker, nth=nth)
                kills += 1
                worker = _worker(queue_url, hosts[kills % 2], tmp_path)
            result = client.wait(build_id, timeout=120)
            assert result.error is not None and result.error["code"] == "WorkerLost", result
            assert result.tag == app_tag and result.image_id is None
        assert kills == 10
        other = _worker(queue_url, hosts[1], tmp_path)  # its queue holds the last clean-up
        assert {build_id: _wait_until_gone(api, build_id) for build_id in build_ids} == {
            build_id: [] for build_id in build_ids
        }
        again = BuildRequest(str(make_source(tmp_path / "next")), images["sti-fake"], app_tag)
        assert client.wait(client.submit_build(again), timeout=120).success
    finally:
        client.close()
        _stop(worker, other)
