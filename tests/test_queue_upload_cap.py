"""STI_UPLOAD_MAX_BYTES is the worker's limit too: a client with a larger (or no) limit of its
own cannot get a bigger upload built."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.queue_helpers import json_result, sti_submit
from tests.services import RedisServer, Worker

pytestmark = pytest.mark.slow


def test_a_worker_refuses_an_upload_above_its_own_cap(
    redis_server: RedisServer, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    url = redis_server.url(12)  # a queue of its own, served by the capped worker only
    worker = Worker(url, "capped-host", tmp_path, STI_UPLOAD_MAX_BYTES="100K")
    try:
        source = tmp_path / "app"
        source.mkdir()
        (source / "blob.bin").write_bytes(os.urandom(300_000))  # incompressible
        env = {k: v for k, v in os.environ.items() if k != "STI_UPLOAD_MAX_BYTES"}
        done = sti_submit(
            "build", str(source), images["sti-fake"], app_tag, "--broker", url, "--json", env=env
        )
        result = json_result(done)
        assert result["error"]["code"] == "InvalidInput", result
        assert "STI_UPLOAD_MAX_BYTES" in result["error"]["message"]
        assert done.returncode == 2
    finally:
        worker.stop()
