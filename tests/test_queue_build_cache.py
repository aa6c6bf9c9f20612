"""A build host keeps BuildKit's cache within STI_BUILD_CACHE_KEEP: its workers trim it after
a build's result is stored, at most once a minute per host."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest

from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.dockertools import build_cache_bytes, four_mebibyte_source
from tests.services import UNCONFINED, RedisServer, Worker

pytestmark = pytest.mark.slow


def _wait_for_cache_at_most(api: docker.APIClient, limit: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while (size := build_cache_bytes(api)) > limit and time.monotonic() < deadline:
        time.sleep(0.5)
    return size


def test_a_worker_trims_the_build_cache_after_a_build(
    redis_server: RedisServer,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    url = redis_server.url(13)  # a queue of its own, served by this worker only
    worker = Worker(
        url,
        "cache-host",
        tmp_path,
        STI_BUILD_CACHE_KEEP="1M",
        STI_BUILDER="buildkit",
        **UNCONFINED,
    )
    client = StiClient(url)
    try:
        source = four_mebibyte_source(tmp_path / "big")
        request = BuildRequest(str(source), images["sti-fake"], app_tag, clean=True)
        result = client.wait(client.submit_build(request), timeout=120)
        assert result.success, result.messages
        assert _wait_for_cache_at_most(api, 1024 * 1024, timeout_s=30) <= 1024 * 1024
    finally:
        client.close()
        worker.stop()
