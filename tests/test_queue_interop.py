"""Other Celery systems use sti by task name alone: send_task and chains into their own tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery, signature

from tests.queue_helpers import make_source, tar_gz_of
from tests.services import Worker


@pytest.fixture
def foreign(broker_url: str, tmp_path: Path) -> Iterator[Celery]:
    """The foreign app, and a worker of its own consuming its queue."""
    env = dict(os.environ, FOREIGN_BROKER_URL=broker_url)
    log = (tmp_path / "foreign-worker.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.foreign_app",
            "worker",
            "-Q",
            "foreign",
            "-c",
            "1",
            "--pool",
            "solo",
            "-n",
            "foreign@%h",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    app = Celery("caller", broker=broker_url, backend=broker_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
    )
    yield app
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_send_task_by_name_returns_the_result_object(
    foreign: Celery,
    images: dict[str, str],
    worker: Worker,
    app_tag: str,
    tmp_path: Path,
    http_server: tuple[str, Path],
) -> None:
    kwargs = {
        "source": _served_source(http_server, tmp_path),
        "build_image": images["sti-fake"],
        "tag": app_tag,
    }
    result = foreign.send_task("sti.build", kwargs=kwargs, queue="sti.builds").get(timeout=120)
    assert result["schema"] == "sti.result/1"
    assert result["success"] is True
    assert result["tag"] == app_tag


def test_chain_of_sti_build_into_a_foreign_task_receives_the_result(
    foreign: Celery,
    images: dict[str, str],
    worker: Worker,
    app_tag: str,
    tmp_path: Path,
    http_server: tuple[str, Path],
) -> None:
    kwargs = {
        "source": _served_source(http_server, tmp_path),
        "build_image": images["sti-fake"],
        "tag": app_tag,
    }
    build = signature("sti.build", kwargs=kwargs, queue="sti.builds", app=foreign)
    collect = signature("foreign.collect", queue="foreign", app=foreign)
    outcome = (build | collect).apply_async().get(timeout=120)
    assert outcome == {"received_kind": "build", "success": True, "tag": app_tag}


def test_validate_by_name(foreign: Celery, images: dict[str, str], worker: Worker) -> None:
    result = foreign.send_task(
        "sti.validate", kwargs={"build_image": images["sti-fake-broken"]}, queue="sti.builds"
    ).get(timeout=60)
    assert result["kind"] == "validate"
    assert result["success"] is False
    assert "missing /usr/bin/prepare" in result["messages"][0]


def _served_source(http_server: tuple[str, Path], tmp_path: Path) -> str:
    """A foreign system names its source by URL: the worker fetches it."""
    base, root = http_server
    (root / "app.tar.gz").write_bytes(tar_gz_of(make_source(tmp_path)))
    return f"{base}/app.tar.gz"
