"""The Procfile brings up a working system on one machine: honcho start, a build, a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.queue_helpers import make_source
from tests.services import BIN, free_port

REPO = Path(__file__).resolve().parent.parent


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        current = pending.pop()
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            for child in children.read_text().split():
                found.add(int(child))
                pending.append(int(child))
    return found


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" not in status.read_text()


@pytest.fixture
def honcho(tmp_path: Path) -> Iterator[tuple[str, int, subprocess.Popen[bytes]]]:
    redis_port, flower_port = free_port(), free_port()
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        STI_REDIS_PORT=str(redis_port),
        STI_REDIS_DIR=str(tmp_path / "redis"),
        STI_FLOWER_PORT=str(flower_port),
        STI_HOST_ID="procfile-host",
        STI_LOG_FORMAT="json",
    )
    log = (tmp_path / "honcho.log").open("wb")
    process = subprocess.Popen(
        [str(BIN / "honcho"), "start", "-c", "worker=2"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield f"redis://127.0.0.1:{redis_port}/0", flower_port, process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


@pytest.mark.slow
def test_honcho_start_runs_builds_and_stops_cleanly(
    honcho: tuple[str, int, subprocess.Popen[bytes]],
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    url, flower_port, process = honcho
    client = StiClient(url)
    try:
        hosts = _wait_for_hosts(client, process)
        assert hosts[0]["host_id"] == "procfile-host"
        assert hosts[0]["slots"] == 4  # two worker processes, concurrency 2 each
        assert len(hosts[0]["nodes"]) == 2  # with distinct node names
        request = BuildRequest(str(make_source(tmp_path)), images["sti-fake"], app_tag)
        result = client.wait(client.submit_build(request), timeout=120)
        assert result.success, result.messages
        with urllib.request.urlopen(
            f"http://127.0.0.1:{flower_port}/healthcheck", timeout=10
        ) as page:
            assert page.read() == b"OK"
    finally:
        client.close()
    started = _descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) is not None
    time.sleep(0.5)
    assert not [pid for pid in started if _alive(pid)], "processes left running after stop"


def _wait_for_hosts(client: StiClient, process: subprocess.Popen[bytes]) -> list[dict[str, object]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "honcho exited early"
        try:
            hosts = client.workers()
        except Exception:
            hosts = []
        if hosts and hosts[0]["slots"] == 4:
            return hosts
        time.sleep(0.5)
    raise AssertionError("the Procfile's workers did not register within 60 s")


def _flower_health(port: int) -> bytes:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=5) as page:
                return page.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
