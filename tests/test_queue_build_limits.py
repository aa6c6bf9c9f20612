"""A worker's build limits hold for builds sent through the queue, on both methods."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti.model import BuildRequest, Result
from sti_submit.client import StiClient
from tests.dockertools import temporary_image
from tests.images import RUN
from tests.services import RedisServer, Worker

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREPARE = """\
#!/bin/sh
echo "interfaces: $(ls /sys/class/net | tr '\\n' ' ')"
grep '^NoNewPrivs:' /proc/self/status
if [ -f /tmp/src/hungry ]; then dd if=/dev/zero of=/dev/null bs=96M count=1; fi
"""


@pytest.fixture(scope="module")
def limited_worker(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StiClient]:
    url = redis_server.url(12)  # a queue of its own, served by this worker only
    logs = tmp_path_factory.mktemp("limited-worker")
    worker = Worker(url, "limited-host", logs, STI_BUILD_MEMORY="32M", STI_BUILD_NETWORK="none")
    client = StiClient(url)
    yield client
    client.close()
    worker.stop()


@pytest.fixture
def probe(api: docker.APIClient) -> Iterator[str]:
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN}
    with temporary_image(api, files, name="limits-probe") as tag:
        yield tag


def _build(
    client: StiClient, tmp_path: Path, file_name: str, image: str, tag: str, method: str
) -> tuple[str, Result]:
    """Build a source of one file (named hungry: prepare asks for 96 MiB) through the queue."""
    source = tmp_path / "src"
    source.mkdir()
    (source / file_name).write_text("one file\n")
    build_id = client.submit_build(BuildRequest(str(source), image, tag, method=method))
    return build_id, client.wait(build_id, timeout=120)


@pytest.mark.parametrize("method", ["build", "run"])
def test_a_queued_build_runs_inside_the_workers_limits(
    limited_worker: StiClient, probe: str, app_tag: str, tmp_path: Path, method: str
) -> None:
    build_id, result = _build(limited_worker, tmp_path, "app.txt", probe, app_tag, method)
    assert result.success, result.messages
    lines = list(limited_worker.follow(build_id, follow=False))
    assert "interfaces: lo " in lines
    assert "NoNewPrivs:\t1" in lines


@pytest.mark.parametrize("method", ["build", "run"])
def test_a_queued_build_over_the_memory_limit_fails_saying_so(
    limited_worker: StiClient,
    api: docker.APIClient,
    probe: str,
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    _, result = _build(limited_worker, tmp_path, "hungry", probe, app_tag, method)
    assert not result.success
    assert result.error_code == "BuildFailed"
    killed = "/usr/bin/prepare was killed (exit code 137) at the build memory limit of 32 MiB"
    assert any(killed in message for message in result.messages), result.messages
    assert any("network none" in message for message in result.messages), result.messages
    assert not api.images(name=app_tag)
