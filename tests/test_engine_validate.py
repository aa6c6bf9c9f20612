"""run_validate against real images: which builder images sti accepts, and what it says if not."""

from __future__ import annotations

import uuid

import docker

from sti.model import Result, ValidateRequest
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_validate
from tests.dockertools import temporary_image
from tests.images import PREPARE, RUN, SAVE_ARTIFACTS


def validate(docker_host: DockerHost, build_image: str, **options: object) -> Result:
    lines: list[str] = []
    result = run_validate(
        docker_host, ValidateRequest(build_image, **options), lines.append, "test"
    )
    assert result.kind == "validate"
    assert result.to_json()["kind"] == "validate"
    return result


def test_valid_image_validates(docker_host: DockerHost, images: dict[str, str]) -> None:
    result = validate(docker_host, images["sti-fake"])
    assert result.success is True
    assert result.error is None
    assert result.messages == (f"Base image {images['sti-fake']} is valid",)


def test_valid_image_validates_for_incremental_builds(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    result = validate(docker_host, images["sti-fake"], incremental=True)
    assert result.success is True
    assert result.messages == (f"Base image {images['sti-fake']} is valid for incremental builds",)


def test_broken_image_fails_naming_missing_prepare(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    tag = images["sti-fake-broken"]
    result = validate(docker_host, tag)
    assert result.success is False
    assert f"Base image {tag} failed validation: missing /usr/bin/prepare" in result.messages
    assert result.messages == (f"Base image {tag} failed validation: missing /usr/bin/prepare",)


def test_incremental_without_save_artifacts_fails_naming_it(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    tag = images["sti-fake-no-save"]
    assert validate(docker_host, tag).success is True
    result = validate(docker_host, tag, incremental=True)
    assert result.success is False
    assert result.messages == (
        f"Base image {tag} failed validation: missing /usr/bin/save-artifacts",
    )


def test_extended_good_builder_and_runtime_validate(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    result = validate(docker_host, images["sti-fake-builder"], runtime_image=images["sti-fake"])
    assert result.success is True
    assert result.messages == (
        f"Base image {images['sti-fake-builder']} is valid for incremental builds",
        f"Runtime image {images['sti-fake']} is valid",
    )


def test_extended_broken_runtime_fails_naming_runtime_image(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    runtime = images["sti-fake-broken"]
    result = validate(docker_host, images["sti-fake-builder"], runtime_image=runtime)
    assert result.success is False
    failures = [m for m in result.messages if "failed validation" in m]
    assert failures == [f"Runtime image {runtime} failed validation: missing /usr/bin/prepare"]
    assert failures[0].startswith("Runtime image")


def test_extended_builder_without_save_artifacts_fails(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    builder = images["sti-fake-no-save"]
    result = validate(docker_host, builder, runtime_image=images["sti-fake"])
    assert result.success is False
    assert (
        f"Base image {builder} failed validation: missing /usr/bin/save-artifacts"
        in result.messages
    )


def test_image_with_entrypoint_and_no_bin_true_validates(
    api: docker.APIClient, docker_host: DockerHost, images: dict[str, str]
) -> None:
    tag = images["sti-fake-entrypoint"]
    assert api.inspect_image(tag)["Config"]["Entrypoint"] == ["/bin/false"]
    result = validate(docker_host, tag, incremental=True)
    assert result.success is True, result.messages
    assert result.messages == (f"Base image {tag} is valid for incremental builds",)


def test_missing_image_fails_with_pull_image_failed(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    missing = f"sti-test/does-not-exist-{uuid.uuid4().hex[:10]}"
    result = validate(docker_host, missing)
    data = result.to_json()
    assert data["success"] is False
    assert data["error"]["code"] == "PullImageFailed"
    assert missing in data["error"]["message"]


def test_missing_runtime_image_fails_with_pull_image_failed(
    docker_host: DockerHost, images: dict[str, str]
) -> None:
    missing = f"sti-test/does-not-exist-{uuid.uuid4().hex[:10]}"
    result = validate(docker_host, images["sti-fake-builder"], runtime_image=missing)
    assert result.success is False
    assert result.error_code == "PullImageFailed"
    assert missing in result.to_json()["error"]["message"]


def test_script_present_but_not_executable_is_reported(
    api: docker.APIClient, docker_host: DockerHost, images: dict[str, str]
) -> None:
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN, "/usr/bin/save-artifacts": ""}
    lines = ["RUN chmod -x /usr/bin/run", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="not-executable") as tag:
        result = validate(docker_host, tag)
    assert result.success is False
    assert result.messages == (
        f"Base image {tag} failed validation: /usr/bin/run is not executable",
    )


def test_script_symlink_to_executable_validates(
    api: docker.APIClient, docker_host: DockerHost, images: dict[str, str]
) -> None:
    files = {"/usr/local/bin/prepare": PREPARE, "/usr/bin/run": RUN, "/opt/save": SAVE_ARTIFACTS}
    lines = [
        "RUN ln -s ../local/bin/prepare /usr/bin/prepare"
        " && ln -s /opt/save /usr/bin/save-artifacts",
        'CMD ["/bin/sh"]',
    ]
    with temporary_image(api, files, lines, name="symlinked-scripts") as tag:
        result = validate(docker_host, tag, incremental=True)
    assert result.success is True, result.messages


def test_script_that_is_a_directory_is_reported(
    api: docker.APIClient, docker_host: DockerHost, images: dict[str, str]
) -> None:
    files = {"/usr/bin/run": RUN}
    lines = ["RUN mkdir -p /usr/bin/prepare", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="dir-script") as tag:
        result = validate(docker_host, tag)
    assert result.success is False
    assert result.messages == (
        f"Base image {tag} failed validation: /usr/bin/prepare is not a file",
    )


def test_validate_result_json_shape(docker_host: DockerHost, images: dict[str, str]) -> None:
    data = validate(docker_host, images["sti-fake"]).to_json()
    assert data["schema"] == "sti.result/1"
    assert data["kind"] == "validate"
    assert {"build_id", "success", "messages", "error"} <= set(data)
    assert data["host"] == "test"
