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
    # the loop's paths of the worker's own machine are allowed
    return Worker(url, host, log_dir, STI_LEASE_SECONDS=str(LEASE_S), STI_ALLOW_LOCAL_SOURCES="1")


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
        workdirs = workdir_for(build_id).parent.glob(f"{workdir_for(build_id).name}*")
        left += [f"work dir {workdir}" for workdir in workdirs]  # of every attempt
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
        build_id = client.submit_build(_slow_build(tmp_path, images, app_tag, sleep_s=2))
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


def _kill_where_prepare_runs(
    client: StiClient, build_id: str, workers: dict[str, Worker], nth: int, log_dir: Path
) -> str:
    """SIGKILL the worker of the host whose prepare started for the nth time, and start its
    successor at once (the other host's settled worker finds the build meanwhile)."""
    started, host = 0, ""
    for line in client.follow(build_id, deadline=time.monotonic() + 90):
        if " claimed by host " in line:
            host = line.rsplit(" ", 1)[1]
        if "prepare: started" in line:
            started += 1
            if started == nth:
                doomed = workers[host]
                os.killpg(doomed.process.pid, signal.SIGKILL)
                doomed.process.wait()
                workers[host] = _worker(doomed.broker_url, host, log_dir)
                return host
    raise AssertionError(f"prepare never started {nth} times")


def test_ten_workers_killed_in_a_row_leave_nothing_behind(
    queue_url: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """Two hosts, ten SIGKILLs: an uploaded build loses its worker, runs again, loses that
    worker too and ends WorkerLost; a build of a path of the worker's machine ends WorkerLost at
    its first loss (another host may not have that path). Then not a container, work dir or
    tag of any of them is left on either host, and the tag is free."""
    client = StiClient(queue_url)
    workers = {host: _worker(queue_url, host, tmp_path) for host in ("loop-a", "loop-b")}
    kills = 0
    build_ids = []
    try:
        for round_number in range(6):
            request = _slow_build(tmp_path / f"s{round_number}", images, app_tag)
            from_path = round_number % 3 == 2
            submit = _submit_worker_path if from_path else StiClient.submit_build
            build_id = submit(client, request)
            build_ids.append(build_id)
            for nth in (1,) if from_path else (1, 2):
                _kill_where_prepare_runs(client, build_id, workers, nth, tmp_path)
                kills += 1
            result = client.wait(build_id, timeout=120)
            assert result.error is not None and result.error["code"] == "WorkerLost", result
            assert result.tag == app_tag and result.image_id is None
            again = [line for line in _log(client, build_id) if "building it again" in line]
            assert len(again) == (0 if from_path else 1), again
        assert kills == 10
        assert {build_id: _wait_until_gone(api, build_id) for build_id in build_ids} == {
            build_id: [] for build_id in build_ids
        }
        again = BuildRequest(str(make_source(tmp_path / "next")), images["sti-fake"], app_tag)
        assert client.wait(client.submit_build(again), timeout=120).success
    finally:
        client.close()
        _stop(*workers.values())
