"""Several Docker hosts: two separate engines on this machine, a worker on each, a registry.

Builds spread over both hosts and stay on the host that claimed them; --push hands the image
to the registry, so a rebuild claimed by the other host still finds its artifacts, and a
builder image one host lacks is pulled from the registry.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest

from examples.busybox_images import build_busybox_image
from sti.errors import InvalidInput
from sti.model import BuildRequest, Result
from sti_submit.client import StiClient
from tests.images import PREPARE, RUN, SAVE_ARTIFACTS
from tests.queue_helpers import make_source
from tests.services import DockerDaemon, RedisServer, Registry, Worker

pytestmark = pytest.mark.slow

BUILDER = "sti-test/multi-builder"
HOSTS = ("host-1", "host-2")


@dataclass
class Cluster:
    broker_url: str
    registry: Registry
    daemons: dict[str, DockerDaemon]
    logs: Path
    workers: dict[str, Worker] = field(default_factory=dict)

    def api(self, host: str) -> docker.APIClient:
        return docker.APIClient(base_url=self.daemons[host].url, version="auto")

    def start(self, host: str) -> None:
        if host not in self.workers:
            self.workers[host] = Worker(
                self.broker_url,
                host,
                self.logs,
                concurrency=1,
                DOCKER_HOST=self.daemons[host].url,
            )

    def stop(self, host: str) -> None:
        worker = self.workers.pop(host, None)
        if worker:
            worker.stop()

    def only(self, host: str) -> None:
        for other in HOSTS:
            if other == host:
                self.start(other)
            else:
                self.stop(other)

    def build(self, source: Path, tag: str, builder: str = BUILDER, **options: object) -> Result:
        client = StiClient(self.broker_url)
        try:
            request = BuildRequest(str(source), builder, tag, push=True, **options)  # type: ignore[arg-type]
            return client.wait(client.submit_build(request), timeout=120)
        finally:
            client.close()

    def has_image(self, host: str, ref: str) -> bool:
        api = self.api(host)
        try:
            api.inspect_image(ref)
            return True
        except docker.errors.ImageNotFound:
            return False
        finally:
            api.close()


@pytest.fixture(scope="module")
def cluster(redis_server: RedisServer) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="sd", dir="/tmp"))  # short: socket paths are limited
    daemons: dict[str, DockerDaemon] = {}
    made = None
    try:
        (root / "registry").mkdir()
        registry = Registry(root / "registry")
        for host in HOSTS:
            (root / host).mkdir()
            daemons[host] = DockerDaemon(root / host)
        made = Cluster(redis_server.url(2), registry, daemons, root)
        for host in HOSTS:
            api = made.api(host)
            files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN}
            build_busybox_image(api, BUILDER, {**files, "/usr/bin/save-artifacts": SAVE_ARTIFACTS})
            api.close()
        yield made
    finally:
        if made:
            for host in list(made.workers):
                made.stop(host)
            made.registry.stop()
        for daemon in daemons.values():
            daemon.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_builds_spread_over_hosts_and_are_pushed_from_their_own_host(
    cluster: Cluster, tmp_path: Path
) -> None:
    for host in HOSTS:
        cluster.start(host)
    source = make_source(tmp_path)
    tags = [f"{cluster.registry.address}/spread-{index}" for index in range(4)]
    client = StiClient(cluster.broker_url)
    try:
        ids = [
            client.submit_build(BuildRequest(str(source), BUILDER, tag, push=True)) for tag in tags
        ]
        results = [client.wait(build_id, timeout=120) for build_id in ids]
    finally:
        client.close()
    assert all(result.success for result in results), [r.messages for r in results]
    assert {result.host for result in results} == set(HOSTS)
    for result in results:
        assert result.digest and result.digest.startswith("sha256:")
        assert result.tag and cluster.has_image(result.host or "", result.tag)
        other = next(host for host in HOSTS if host != result.host)
        assert not cluster.has_image(other, result.tag), "a step ran on the other host"


def test_incremental_rebuild_on_the_other_host_pulls_the_previous_image(
    cluster: Cluster, tmp_path: Path
) -> None:
    source = make_source(tmp_path)
    tag = f"{cluster.registry.address}/incremental"
    cluster.only("host-1")
    first = cluster.build(source, tag)
    assert first.success and first.host == "host-1" and not first.incremental
    cluster.only("host-2")
    second = cluster.build(source, tag)
    assert second.success, second.messages
    assert second.host == "host-2"
    assert second.incremental
    assert f"Incremental build: reusing artifacts saved from {tag}" in second.messages


def test_extended_incremental_rebuild_on_the_other_host(cluster: Cluster, tmp_path: Path) -> None:
    source = make_source(tmp_path)
    tag = f"{cluster.registry.address}/extended"
    cluster.only("host-1")
    first = cluster.build(source, tag, runtime_image=BUILDER)
    assert first.success, first.messages
    cluster.only("host-2")
    second = cluster.build(source, tag, runtime_image=BUILDER)
    assert second.success and second.host == "host-2" and second.incremental, second.messages


def test_builder_image_a_host_lacks_is_pulled_from_the_registry(
    cluster: Cluster, tmp_path: Path
) -> None:
    shared_builder = f"{cluster.registry.address}/shared-builder:1"
    api = cluster.api("host-1")
    api.tag(BUILDER, f"{cluster.registry.address}/shared-builder", tag="1")
    for event in api.push(
        f"{cluster.registry.address}/shared-builder", tag="1", stream=True, decode=True
    ):
        assert "error" not in event, event
    api.close()
    assert not cluster.has_image("host-2", shared_builder)
    cluster.only("host-2")
    result = cluster.build(
        make_source(tmp_path), f"{cluster.registry.address}/pulled", shared_builder
    )
    assert result.success and result.host == "host-2", result.messages
    assert cluster.has_image("host-2", shared_builder)


def test_push_needs_a_registry_in_the_tag() -> None:
    with pytest.raises(InvalidInput, match="--push needs APP_IMAGE_TAG to name its registry"):
        BuildRequest("/tmp", BUILDER, "plain/app", push=True)
