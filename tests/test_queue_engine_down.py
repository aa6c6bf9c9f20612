"""A worker whose Docker engine is unreachable: builds and validations end with the contract's
DockerConnectionFailed (exit 3) and a result object, never a lost build or an InternalError."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.queue_helpers import json_result, make_source, sti_submit
from tests.services import RedisServer, Worker, free_port

_DB = 11  # a queue of its own: the session's worker (a live engine) must not take these builds


@pytest.fixture(scope="module")
def engine_down_url(redis_server: RedisServer) -> str:
    return redis_server.url(_DB)


@pytest.fixture(scope="module")
def worker_without_engine(
    engine_down_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    logs = tmp_path_factory.mktemp("engine-down-logs")
    dead_engine = f"tcp://127.0.0.1:{free_port()}"
    started = Worker(engine_down_url, "host-no-engine", logs, DOCKER_HOST=dead_engine)
    yield started
    started.stop()


def test_a_build_on_a_host_whose_engine_is_down_is_docker_connection_failed(
    worker_without_engine: Worker, engine_down_url: str, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    done = sti_submit(
        "build", str(source), "acme/builder", "acme/app", "--broker", engine_down_url, "--json"
    )
    result = json_result(done)
    assert result["error"]["code"] == "DockerConnectionFailed", result
    assert "cannot reach the Docker engine" in result["error"]["message"]
    assert done.returncode == 3
    assert result["host"] == "host-no-engine"


def test_a_validation_on_a_host_whose_engine_is_down_is_docker_connection_failed(
    worker_without_engine: Worker, engine_down_url: str
) -> None:
    done = sti_submit("validate", "acme/builder", "--broker", engine_down_url, "--json")
    result = json_result(done)
    assert result["error"]["code"] == "DockerConnectionFailed", result
    assert done.returncode == 3
