"""A directory sti-submit uploads is sent after its build is queued: the worker reads it as it
arrives. The build starts before the bytes do and builds them; an upload its submitter abandons
fails the build after STI_UPLOAD_STALL_TIMEOUT, one that fails on the submitting side at once,
with the reason, and neither leaves an image."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

from sti import environment
from sti.blobstore import BlobStore
from sti.model import BuildRequest
from sti_submit.client import StiClient
from sti_submit.upload import SourceUpload
from tests.dockertools import image_files
from tests.queue_helpers import make_source
from tests.services import RedisServer, Worker

STALL_S = 2


@pytest.fixture(scope="module")
def queue_url(redis_server: RedisServer) -> str:
    return redis_server.url(7)  # a queue of its own, served by the impatient worker only


@pytest.fixture(scope="module")
def impatient_worker(
    queue_url: str, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    started = Worker(
        queue_url,
        "impatient-host",
        tmp_path_factory.mktemp("logs"),
        STI_UPLOAD_STALL_TIMEOUT=str(STALL_S),
    )
    yield started
    started.stop()


@pytest.fixture
def queue_client(queue_url: str, impatient_worker: Worker) -> Iterator[StiClient]:
    made = StiClient(queue_url)
    yield made
    made.close()


@pytest.fixture
def store(queue_url: str) -> Iterator[BlobStore]:
    client = redis.Redis.from_url(queue_url)
    yield BlobStore(client, expires_s=600, max_bytes=environment.upload_max_bytes())
    client.close()


def _opened(store: BlobStore, tmp_path: Path) -> SourceUpload:
    upload = SourceUpload(store, make_source(tmp_path))
    assert upload.streams and upload.ref.blob.startswith("upload:")
    upload.open()
    return upload


def _wait_for_line(client: StiClient, build_id: str, wanted: str) -> None:
    for line in client.follow(build_id, deadline=time.monotonic() + 60):
        if wanted in line:
            return
    pytest.fail(f"the build never said {wanted!r}")


def test_a_build_starts_before_its_upload_arrives_and_builds_it(
    api: docker.APIClient,
    images: dict[str, str],
    queue_client: StiClient,
    store: BlobStore,
    app_tag: str,
    tmp_path: Path,
) -> None:
    upload = _opened(store, tmp_path)
    build_id = queue_client.submit_build(BuildRequest(str(upload.ref), images["sti-fake"], app_tag))
    _wait_for_line(queue_client, build_id, "goes into the build as it arrives")
    assert upload.send().sent  # only now do the bytes leave
    result = queue_client.wait(build_id, timeout=120)
    assert result.success, result.messages
    assert image_files(api, app_tag, "/sti-fake/src") == {
        "index.html": b"<h1>hello</h1>\n",
        "static/style.css": b"h1 { color: red }\n",
    }


def test_an_upload_its_submitter_abandons_fails_the_build_after_the_stall_timeout(
    api: docker.APIClient,
    images: dict[str, str],
    queue_client: StiClient,
    store: BlobStore,
    app_tag: str,
    tmp_path: Path,
) -> None:
    upload = _opened(store, tmp_path)  # and never sent: the submitter was killed
    started = time.monotonic()
    request = BuildRequest(str(upload.ref), images["sti-fake"], app_tag)
    result = queue_client.wait(queue_client.submit_build(request), timeout=120)
    assert result.error_code == "SourceFetchFailed"
    assert f"nothing arrived for {STALL_S}s (STI_UPLOAD_STALL_TIMEOUT)" in str(result.error)
    assert time.monotonic() - started < 30
    assert not api.images(name=app_tag)


def test_an_upload_that_fails_on_the_submitting_side_ends_its_build_with_the_reason(
    api: docker.APIClient,
    images: dict[str, str],
    queue_client: StiClient,
    store: BlobStore,
    app_tag: str,
    tmp_path: Path,
) -> None:
    upload = _opened(store, tmp_path)
    build_id = queue_client.submit_build(BuildRequest(str(upload.ref), images["sti-fake"], app_tag))
    _wait_for_line(queue_client, build_id, "goes into the build as it arrives")
    store.fail(upload.ref.blob, "[Errno 13] Permission denied: 'app/secret.key'\n\x1b[31m")
    result = queue_client.wait(build_id, timeout=120)
    assert result.error_code == "SourceFetchFailed"
    message = str(result.error)
    assert "failed on the submitting side: [Errno 13] Permission denied" in message
    assert "\x1b" not in message
    assert not api.images(name=app_tag)
