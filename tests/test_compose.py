"""The docker-compose deployment (compose/): Redis, two worker replicas and flower built from the
debootstrap base image, a build submitted from this host through it, flower behind basic auth.

The stack runs on the host engine (the workers use it through the mounted socket) under a
project name that does not start with `sti-`, so the leak check in conftest.py ignores it.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.queue_helpers import make_source
from tests.services import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
BASE_IMAGE = "sti-local/debian:bookworm"
HOST_ID = "compose-host"  # the compose file's default STI_HOST_ID
REPLICAS = 2
SLOTS_PER_WORKER = 2  # sti-worker's default concurrency, the compose file's default too
UP_TIMEOUT_S = 600
READY_TIMEOUT_S = 120


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    broker_url: str
    flower_url: str
    flower_auth: str
    timings: dict[str, float] = field(default_factory=dict)

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        done = subprocess.run(
            command,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def logs(self) -> str:
        done = self.compose("logs", "--no-color", "--tail", "200", check=False, timeout=60)
        return done.stdout + done.stderr


def _timed(timings: dict[str, float], name: str, command: list[str], timeout: float) -> str:
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    timings[name] = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


def _ensure_docker_compose() -> None:
    if shutil.which("docker-compose"):
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", "docker-compose"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, env=env)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 or not shutil.which("docker-compose"):
        pytest.fail(f"docker-compose is missing and apt-get could not install it:\n{done.stderr}")


def _wait_for_workers(stack: Stack) -> None:
    client = StiClient(stack.broker_url)
    deadline = time.monotonic() + READY_TIMEOUT_S
    seen: list[dict[str, object]] = []
    try:
        while time.monotonic() < deadline:
            try:
                seen = client.workers()
            except Exception as error:  # Redis not published yet: keep waiting
                seen = [{"error": str(error)}]
            if any(
                h["host_id"] == HOST_ID and h["slots"] == REPLICAS * SLOTS_PER_WORKER
                for h in seen
                if "host_id" in h
            ):
                return
            time.sleep(0.5)
    finally:
        client.close()
    raise RuntimeError(
        f"the compose workers did not register {REPLICAS * SLOTS_PER_WORKER} slots on host "
        f"{HOST_ID} within {READY_TIMEOUT_S}s; workers(): {seen}\n"
        f"docker-compose logs:\n{stack.logs()}"
    )


def _prune_older_images(api: docker.APIClient, before: int) -> None:
    """Untagged images of earlier compose builds (each code change leaves some); this run's
    stay as the build cache of the next."""
    with contextlib.suppress(docker.errors.APIError):
        api.prune_images(filters={"label": "io.sti.compose-image", "until": str(before)})


def _leftover_containers(api: docker.APIClient, project: str) -> list[str]:
    found = api.containers(all=True, filters={"label": f"com.docker.compose.project={project}"})
    return sorted(name for c in found for name in c["Names"])


@pytest.fixture(scope="module")
def stack(api: docker.APIClient) -> Iterator[Stack]:
    _ensure_docker_compose()
    timings: dict[str, float] = {}
    _timed(timings, "base image", ["bash", str(ROOT / "scripts" / "make-base-image.sh")], 1800)
    _timed(timings, "wheels", ["bash", str(ROOT / "compose" / "build-wheels.sh")], 600)
    project = f"stitest{uuid.uuid4().hex[:8]}"  # not `sti-...`: see the module docstring
    redis_port = free_port()
    flower_port = free_port()
    while flower_port == redis_port:
        flower_port = free_port()
    flower_auth = f"sti:{uuid.uuid4().hex}"
    env = dict(
        os.environ,
        STI_BASE_IMAGE=BASE_IMAGE,
        STI_COMPOSE_REDIS_PORT=str(redis_port),
        STI_COMPOSE_FLOWER_PORT=str(flower_port),
        FLOWER_BASIC_AUTH=flower_auth,
    )
    env.pop("STI_HOST_ID", None)  # the compose file's default is what is tested
    made = Stack(
        project=project,
        env=env,
        broker_url=f"redis://127.0.0.1:{redis_port}/0",
        flower_url=f"http://127.0.0.1:{flower_port}/",
        flower_auth=flower_auth,
        timings=timings,
    )
    build_started = int(time.time())
    try:
        started = time.monotonic()
        made.compose("build", "--force-rm", timeout=UP_TIMEOUT_S)
        timings["compose build"] = time.monotonic() - started
        started = time.monotonic()
        made.compose("up", "-d", "--scale", f"worker={REPLICAS}", timeout=UP_TIMEOUT_S)
        _wait_for_workers(made)
        timings["compose up until workers ready"] = time.monotonic() - started
        yield made
    finally:
        started = time.monotonic()
        try:
            down = made.compose("down", "-v", "--remove-orphans", "--timeout", "60", check=False)
            down_error = down.stderr if down.returncode else ""
        except subprocess.TimeoutExpired as error:
            down_error = str(error)
        timings["compose down"] = time.monotonic() - started
        print(
            "compose timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()),
            file=sys.stderr,
        )
        _prune_older_images(api, build_started)
        leftover = _leftover_containers(api, project)
        for name in leftover:
            api.remove_container(name.lstrip("/"), force=True, v=True)
        assert not down_error, f"docker-compose down failed:\n{down_error}"
        assert not leftover, f"containers of {project} left after down: {leftover}"


def test_compose_workers_share_the_host_id(stack: Stack) -> None:
    client = StiClient(stack.broker_url)
    try:
        hosts = client.workers()
    finally:
        client.close()
    assert [h["host_id"] for h in hosts] == [HOST_ID]
    assert len(hosts[0]["nodes"]) == REPLICAS
    assert hosts[0]["slots"] == REPLICAS * SLOTS_PER_WORKER


def test_build_from_this_host_through_compose(
    stack: Stack, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    client = StiClient(stack.broker_url)
    started = time.monotonic()
    try:
        build_id = client.submit_build(BuildRequest(str(source), images["sti-fake"], app_tag))
        result = client.wait(build_id, timeout=180)
    finally:
        client.close()
    stack.timings["build through compose"] = time.monotonic() - started
    assert result.success, f"{result.messages}\ndocker-compose logs:\n{stack.logs()}"
    assert result.host == HOST_ID
    assert api.inspect_image(app_tag)["Id"] == result.image_id


def _status(url: str, auth: str | None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_flower_needs_basic_auth(stack: Stack) -> None:
    deadline = time.monotonic() + 60
    while True:  # flower starts listening a little after the workers are ready
        try:
            unauthenticated = _status(stack.flower_url, None)
            break
        except (urllib.error.URLError, ConnectionError) as error:
            if time.monotonic() > deadline:
                raise RuntimeError(f"flower did not answer: {error}\n{stack.logs()}") from error
            time.sleep(0.5)
    assert unauthenticated == 401
    assert _status(stack.flower_url, "sti:wrong") == 401
    assert _status(stack.flower_url, stack.flower_auth) == 200
