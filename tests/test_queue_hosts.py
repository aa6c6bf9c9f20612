"""Two build hosts on one queue: builds spread over both, and every step of a build runs on the
host that claimed it (its source and artifacts live there)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.queue_helpers import make_source
from tests.services import RedisServer, Worker


@pytest.fixture(scope="module")
def two_hosts(
    redis_server: RedisServer, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, Worker]]]:
    url = redis_server.url(1)  # a queue of its own: the session's worker must not take these
    logs = tmp_path_factory.mktemp("two-hosts")
    workers = {host: Worker(url, host, logs, concurrency=1) for host in ("host-x", "host-y")}
    yield url, workers
    for started in workers.values():
        started.stop()


@pytest.mark.slow
def test_builds_spread_over_hosts_and_steps_stay_on_their_host(
    api: docker.APIClient,
    images: dict[str, str],
    two_hosts: tuple[str, dict[str, Worker]],
    tmp_path: Path,
) -> None:
    url, workers = two_hosts
    client = StiClient(url)
    tags = [f"sti-test/spread-{index}" for index in range(4)]
    source = str(make_source(tmp_path))
    try:
        build_ids = [
            client.submit_build(BuildRequest(source, images["sti-fake"], tag)) for tag in tags
        ]
        results = [client.wait(build_id, timeout=120) for build_id in build_ids]
    finally:
        client.close()
        for tag in tags:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_image(tag, force=True)

    assert all(result.success for result in results), [r.messages for r in results]
    assert {result.host for result in results} == {"host-x", "host-y"}
    for result in results:
        claimed = result.host
        ran_on = {
            host
            for host, started in workers.items()
            for record in _records(started)
            if record.get("build_id") == result.build_id
            and record.get("task") in ("sti.step", "sti.finish")
        }
        assert ran_on == {claimed}, f"build {result.build_id} claimed by {claimed} ran on {ran_on}"
        assert _step_records(workers[claimed], result.build_id) >= 1


def _records(worker: Worker) -> list[dict[str, object]]:
    records = []
    for line in worker.log().splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _step_records(worker: Worker, build_id: str) -> int:
    """How many step tasks of the build this worker logged as succeeded, each with its host."""
    return sum(
        1
        for record in _records(worker)
        if record.get("build_id") == build_id
        and record.get("task") == "sti.step"
        and record.get("host") == worker.host_id
        and "succeeded" in str(record.get("event"))
    )
