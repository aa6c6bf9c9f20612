"""Extended builds (-R): build in a builder image, deploy /tmp/build into a runtime image."""

from __future__ import annotations

import docker

from sti.model import BuildRequest, Result
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_build
from tests.dockertools import (
    SOURCE_FILES,
    TRACKER,
    containers_of_build,
    image_config,
    image_files,
    image_id_or_none,
    images_of_build,
    run_and_read,
)
from tests.engine_helpers import METHODS


def extended_build(
    docker_host: DockerHost,
    source: str,
    builder: str,
    runtime: str,
    tag: str,
    **options: object,
) -> tuple[Result, list[str]]:
    lines: list[str] = []
    request = BuildRequest(
        source=source, build_image=builder, tag=tag, runtime_image=runtime, **options
    )
    result = run_build(docker_host, request, lines.append, host="test")
    if result.success:
        TRACKER.built(docker_host.api.inspect_image(f"{tag}-build")["Id"], result.image_id)
    return result, lines


@METHODS
def test_extended_clean_build_tags_app_and_build_images(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, _ = extended_build(
        docker_host, source, images["sti-fake-builder"], images["sti-fake"], app_tag, method=method
    )
    assert result.success is True, result.messages
    assert result.incremental is False
    assert result.runtime_image == images["sti-fake"]
    assert result.to_json()["runtime_image"] == images["sti-fake"]
    assert result.image_id == api.inspect_image(app_tag)["Id"]
    build_id = image_id_or_none(api, f"{app_tag}-build")
    assert build_id is not None
    assert build_id != result.image_id
    names = [step.name for step in result.steps]
    assert names == ["fetch_source", "check_images", "save_artifacts", "build", "deploy", "tag"]
    assert image_config(api, app_tag)["Cmd"] == ["/usr/bin/run"]


@METHODS
def test_extended_build_deploys_builder_output_as_runtime_source(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, lines = extended_build(
        docker_host, source, images["sti-fake-builder"], images["sti-fake"], app_tag, method=method
    )
    assert result.success is True, result.messages
    assert "prepare: building (builder)" in lines
    assert "prepare: building" in lines
    files = run_and_read(api, app_tag, "/sti-fake")
    assert "run-invoked" in files
    assert "prepare-invoked" in files
    for relative, content in SOURCE_FILES.items():
        assert files[f"src/{relative}"] == content
    assert "src/save-artifacts-invoked" not in files
    # the builder result keeps its /tmp/build, the runtime image does not get the builder's files
    builder_files = image_files(api, f"{app_tag}-build", "/tmp/build")
    assert builder_files["index.html"] == SOURCE_FILES["index.html"]


@METHODS
def test_second_extended_build_is_incremental_with_artifacts_from_build_tag(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    builder, runtime = images["sti-fake-builder"], images["sti-fake"]
    first, _ = extended_build(docker_host, source, builder, runtime, app_tag, method=method)
    assert first.success is True, first.messages
    second, lines = extended_build(docker_host, source, builder, runtime, app_tag, method=method)
    assert second.success is True, second.messages
    assert second.incremental is True
    assert any(f"Saving artifacts from {app_tag}-build" in line for line in lines)
    files = run_and_read(api, app_tag, "/sti-fake")
    assert "src/save-artifacts-invoked" in files
    assert files["src/index.html"] == SOURCE_FILES["index.html"]


@METHODS
def test_extended_clean_build_ignores_artifacts(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    builder, runtime = images["sti-fake-builder"], images["sti-fake"]
    first, _ = extended_build(docker_host, source, builder, runtime, app_tag, method=method)
    assert first.success is True, first.messages
    second, _ = extended_build(
        docker_host, source, builder, runtime, app_tag, method=method, clean=True
    )
    assert second.success is True, second.messages
    assert second.incremental is False
    assert "src/save-artifacts-invoked" not in run_and_read(api, app_tag, "/sti-fake")


@METHODS
def test_extended_build_with_failing_runtime_prepare_leaves_no_tags_or_images(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, lines = extended_build(
        docker_host,
        source,
        images["sti-fake-builder"],
        images["sti-fake-failing"],
        app_tag,
        method=method,
    )
    assert result.success is False
    assert result.error_code == "BuildFailed"
    assert result.image_id is None
    assert "prepare: about to fail" in result.messages
    assert "prepare: building (builder)" in lines
    assert image_id_or_none(api, app_tag) is None
    assert image_id_or_none(api, f"{app_tag}-build") is None
    assert images_of_build(api, result.build_id) == []
    assert containers_of_build(api, result.build_id) == []


@METHODS
def test_extended_build_with_failing_runtime_keeps_previous_tags(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    builder = images["sti-fake-builder"]
    first, _ = extended_build(docker_host, source, builder, images["sti-fake"], app_tag)
    assert first.success is True, first.messages
    old = {ref: api.inspect_image(ref)["Id"] for ref in (app_tag, f"{app_tag}-build")}
    result, _ = extended_build(
        docker_host, source, builder, images["sti-fake-failing"], app_tag, method=method
    )
    assert result.success is False
    assert {ref: api.inspect_image(ref)["Id"] for ref in old} == old
    assert images_of_build(api, result.build_id) == []


def test_extended_build_with_builder_lacking_save_artifacts_fails_invalid_image(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    builder = images["sti-fake-no-save"]
    result, _ = extended_build(docker_host, source, builder, images["sti-fake"], app_tag)
    assert result.success is False
    assert result.error_code == "InvalidImage"
    assert "/usr/bin/save-artifacts" in result.to_json()["error"]["message"]
    assert image_id_or_none(api, app_tag) is None


def test_extended_build_with_broken_runtime_fails_naming_runtime_image(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    runtime = images["sti-fake-broken"]
    result, _ = extended_build(docker_host, source, images["sti-fake-builder"], runtime, app_tag)
    assert result.success is False
    assert result.error_code == "InvalidImage"
    message = result.to_json()["error"]["message"]
    assert message == f"Runtime image {runtime} failed validation: missing /usr/bin/prepare"
    assert image_id_or_none(api, f"{app_tag}-build") is None
