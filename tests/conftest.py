"""Shared fixtures: a real Docker engine, fixture builder images built once per session, and a
check after every test that sti left no container or temp dir behind."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti_submit.client import StiClient
from sti_worker.engine.docker_host import BUILD_ID_LABEL, DockerHost
from sti_worker.engine.sandbox import Sandbox
from tests.dockertools import TRACKER, write_source
from tests.images import build_all
from tests.services import RedisServer, Worker

# a build's work dir: sti-<build id>, with .<attempt> for a build run again
_WORKDIR = re.compile(
    r"^sti-(?:[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12})(?:\.[0-9]+)?$"
)

#: Fixtures that reach a Docker engine (directly, or through a worker or daemon they start).
DOCKER_FIXTURES = frozenset(
    {
        "api",
        "images",
        "docker_host",
        "app_tag",
        "worker",
        "builder_host",  # test_engine_builders: a DockerHost per builder
        "cluster",  # test_multi_host: dockerd daemons, a registry and workers
        "two_hosts",  # test_queue_hosts: two workers
        "stack",  # test_compose: docker compose
        "honcho",  # test_procfile: the Procfile's worker builds with Docker
    }
)
#: Modules whose every test needs Docker, some without asking for a fixture that says so.
DOCKER_MODULES = frozenset(
    {
        "test_cli_local",  # sti-submit --local runs the engine in-process
        "test_engine_call_trace",  # DockerHosts of its own
        "test_engine_prepare_ways",
        "test_compose",
        "test_procfile",
        "test_queue_lifecycle",  # starts its own workers
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a Docker engine `docker`: `pytest -m "not docker"` is the
    fast tier, which needs only redis-server."""
    for item in items:
        module = getattr(item, "module", None)
        name = module.__name__.rpartition(".")[2] if module else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        if name in DOCKER_MODULES or fixtures & DOCKER_FIXTURES:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def api() -> Iterator[docker.APIClient]:
    client = docker.APIClient(version="auto")
    try:
        client.ping()
    except Exception as error:  # the whole suite needs it: say so once, clearly
        pytest.exit(f"these tests need a running Docker engine: {error}", returncode=3)
    yield client
    client.close()


@pytest.fixture(scope="session")
def images(api: docker.APIClient) -> dict[str, str]:
    """Short name (sti-fake, sti-fake-builder, ...) -> tag of a locally built fixture image."""
    return build_all(api, prefix="sti-test/")


@pytest.fixture(autouse=True)
def remove_images_the_test_made() -> Iterator[None]:
    yield
    TRACKER.cleanup()


@pytest.fixture
def source(tmp_path: Path) -> str:
    return write_source(tmp_path / "src")


@pytest.fixture
def docker_host() -> Iterator[DockerHost]:
    host = DockerHost()
    yield host
    host.close()


@pytest.fixture
def buildkit_host() -> Iterator[DockerHost]:
    """The engine's BuildKit for the build method: the build limits lifted, as it cannot hold
    them."""
    host = DockerHost(builder="buildkit", sandbox=Sandbox.engine_defaults())
    yield host
    host.close()


@pytest.fixture
def app_tag(api: docker.APIClient) -> Iterator[str]:
    """A fresh APP_IMAGE_TAG; the images tagged with it (and its -build tag) are removed after."""
    tag = f"sti-test/app-{uuid.uuid4().hex[:10]}"
    yield tag
    for ref in (tag, f"{tag}-build"):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_image(ref, force=True)


def _sti_containers(api: docker.APIClient) -> list[str]:
    named = api.containers(all=True, filters={"name": "^/sti-"})
    labelled = api.containers(all=True, filters={"label": BUILD_ID_LABEL})
    return sorted({name for c in named + labelled for name in c["Names"]})


def _sti_dangling_images(api: docker.APIClient) -> set[str]:
    found = api.images(filters={"label": BUILD_ID_LABEL, "dangling": True})
    return {image["Id"] for image in found}


def _sti_workdirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).iterdir() if _WORKDIR.match(p.name)}


@pytest.fixture(scope="session", autouse=True)
def own_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """sti-submit's upload records and --local's image facts live under the user's cache dir:
    the suite's under one of its own (the processes it starts inherit it), not the runner's."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: no sti container (by name or label), no untagged image of a build and no
    sti work dir remains."""
    if "api" not in request.fixturenames and "images" not in request.fixturenames:
        yield
        return
    api: docker.APIClient = request.getfixturevalue("api")
    dirs_before = _sti_workdirs()
    containers_before = set(_sti_containers(api))
    images_before = _sti_dangling_images(api)
    yield
    leftover = sorted(set(_sti_containers(api)) - containers_before)
    for name in leftover:
        api.remove_container(name.lstrip("/"), force=True, v=True)
    assert not leftover, f"containers left behind: {leftover}"
    images_left = _sti_dangling_images(api) - images_before
    for image in images_left:
        api.remove_image(image, force=True)
    assert not images_left, f"untagged images of builds left behind: {images_left}"
    new_dirs = _sti_workdirs() - dirs_before
    assert not new_dirs, f"work dirs left behind: {new_dirs}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def broker_url(redis_server: RedisServer) -> str:
    return redis_server.url(0)


@pytest.fixture(scope="session")
def worker(
    broker_url: str, images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Worker]:
    """One sti-worker (host id host-a, 2 slots) serving the session's queue; the tests serve
    archives on loopback, which a worker refuses by default."""
    logs = tmp_path_factory.mktemp("worker-logs")
    started = Worker(broker_url, "host-a", logs, STI_ALLOW_INTERNAL_URLS="1")
    yield started
    started.stop()


@pytest.fixture
def client(broker_url: str) -> Iterator[StiClient]:
    made = StiClient(broker_url)
    yield made
    made.close()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()
