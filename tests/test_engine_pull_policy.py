"""s2i's pull policies, on an engine without a registry: never pulls nothing, always tries and
falls back to the engine's own image, if-not-present pulls only what is missing."""

from __future__ import annotations

import uuid

import docker
import pytest

from sti_worker.engine.docker_host import DockerHost
from tests.engine_helpers import build

pytestmark = pytest.mark.docker


def test_never_refuses_a_missing_builder_without_trying_to_pull(
    docker_host: DockerHost, source: str, app_tag: str
) -> None:
    missing = f"sti-test/nowhere-{uuid.uuid4().hex[:8]}"
    result, lines = build(docker_host, source, missing, app_tag, pull_policy="never")
    assert result.error_code == "NoSuchBaseImage"
    assert f"image {missing} is not on this engine, and the pull policy is never" in (
        result.messages
    )
    assert not any("pull" in line.lower() and "policy" not in line for line in lines), lines


def test_always_tries_the_registry_and_builds_with_the_engines_image_when_it_fails(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    source: str,
    app_tag: str,
) -> None:
    result, lines = build(docker_host, source, images["sti-fake"], app_tag, pull_policy="always")
    assert result.success, result.messages
    assert f"Pulling {images['sti-fake']} (pull policy always)" in lines
    assert any(line.endswith("; using the image this engine has") for line in lines), lines


def test_a_runtime_that_must_not_be_pulled_is_refused_as_a_runtime(
    docker_host: DockerHost, images: dict[str, str], source: str, app_tag: str
) -> None:
    missing = f"sti-test/nowhere-{uuid.uuid4().hex[:8]}"
    result, _ = build(
        docker_host,
        source,
        images["sti-fake-builder"],
        app_tag,
        runtime_image=missing,
        runtime_pull_policy="never",
    )
    assert result.error_code == "NoSuchRuntimeImage"


def test_never_keeps_an_incremental_build_to_the_engines_previous_image(
    docker_host: DockerHost, images: dict[str, str], source: str, app_tag: str
) -> None:
    first, _ = build(docker_host, source, images["sti-fake"], app_tag)
    assert first.success, first.messages
    second, _ = build(
        docker_host, source, images["sti-fake"], app_tag, incremental_pull_policy="never"
    )
    assert second.success and second.incremental, second.messages
