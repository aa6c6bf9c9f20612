"""A build host keeps what builds leave on its engine bounded: BuildKit's cache within
STI_BUILD_CACHE_KEEP (its workers trim it after a build's result is stored, at most once a
minute per host) and the source images within STI_SOURCE_IMAGES_KEEP (after each build's
result)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import docker
import pytest

from sti.model import SOURCE_REPOSITORY, BuildRequest
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


def _source_images(api: docker.APIClient) -> set[str]:
    return {tag for image in api.images(name=SOURCE_REPOSITORY) for tag in image["RepoTags"]}


def test_a_worker_keeps_no_more_source_images_than_its_limit(
    redis_server: RedisServer,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    url = redis_server.url(13)
    worker = Worker(url, "source-images-host", tmp_path, STI_SOURCE_IMAGES_KEEP="1", **UNCONFINED)
    client = StiClient(url)
    before = _source_images(api)
    made: list[str] = []
    try:
        for name in ("first", "second"):
            source = tmp_path / name
            source.mkdir()
            # incompressible and above the size from which an upload gets a source image
            (source / "blob").write_bytes(os.urandom(9 * 1024 * 1024))
            request = BuildRequest(str(source), images["sti-fake"], app_tag, clean=True)
            result = client.wait(client.submit_build(request), timeout=120)
            assert result.success, result.messages
            made += sorted(_source_images(api) - before - set(made))
        assert len(made) == 2, made  # the second build made its own
        # removed by the worker's housekeeping, after the second build's result
        deadline = time.monotonic() + 30
        while _source_images(api) - before != {made[1]} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _source_images(api) - before == {made[1]}
    finally:
        client.close()
        worker.stop()
        for reference in _source_images(api) - before:
            api.remove_image(reference, force=True)
