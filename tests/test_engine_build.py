"""run_build against real images, in both build methods: clean, incremental and failing builds."""

from __future__ import annotations

import json
import uuid

import docker
import pytest

from sti.model import Result
from sti_worker.engine.docker_host import DockerHost
from tests.dockertools import (
    CONTRACT_FIELDS,
    SOURCE_FILES,
    descendants,
    image_config,
    image_files,
    image_id_or_none,
    images_of_build,
    remove_images,
    run_and_read,
    temporary_image,
)
from tests.engine_helpers import METHODS, build
from tests.images import PREPARE, RUN


def assert_succeeded(result: Result) -> None:
    assert result.success is True, result.messages
    assert result.error is None


# clean builds


@METHODS
def test_clean_build_tags_image_that_ran_prepare_and_has_the_source(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(result)
    assert result.incremental is False
    assert result.method == method
    assert result.tag == app_tag
    assert result.image_id == api.inspect_image(app_tag)["Id"]
    files = run_and_read(api, app_tag, "/sti-fake")
    assert "run-invoked" in files
    assert "prepare-invoked" in files
    assert "save-artifacts-invoked" not in files
    for relative, content in SOURCE_FILES.items():
        assert files[f"src/{relative}"] == content


@METHODS
def test_output_image_cmd_is_usr_bin_run(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(result)
    config = image_config(api, app_tag)
    assert config["Cmd"] == ["/usr/bin/run"]
    assert not config.get("Entrypoint")


@METHODS
def test_output_image_is_labelled_with_the_build_id(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(result)
    assert image_config(api, app_tag)["Labels"]["io.sti.build-id"] == result.build_id


# incremental builds


@METHODS
def test_second_build_into_same_tag_is_incremental(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    first, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(first)
    assert first.incremental is False
    second, lines = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(second)
    assert second.incremental is True
    assert second.to_json()["incremental"] is True
    assert second.image_id != first.image_id
    assert "prepare: found artifacts from a previous build" in lines
    files = run_and_read(api, app_tag, "/sti-fake")
    assert "save-artifacts-invoked" in files
    assert "run-invoked" in files
    assert files["src/index.html"] == SOURCE_FILES["index.html"]


@METHODS
def test_clean_option_ignores_previous_artifacts(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    assert_succeeded(build(docker_host, source, images["sti-fake"], app_tag, method=method)[0])
    second, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method, clean=True)
    assert_succeeded(second)
    assert second.incremental is False
    assert any("Clean build" in message for message in second.messages)
    files = run_and_read(api, app_tag, "/sti-fake")
    assert "save-artifacts-invoked" not in files
    assert "prepare-invoked" in files


@METHODS
def test_previous_image_without_save_artifacts_gives_clean_build_with_message(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    builder = images["sti-fake-no-save"]
    assert_succeeded(build(docker_host, source, builder, app_tag, method=method)[0])
    second, _ = build(docker_host, source, builder, app_tag, method=method)
    assert_succeeded(second)
    assert second.incremental is False
    assert (
        f"Previous image {app_tag} has no /usr/bin/save-artifacts: clean build" in second.messages
    )
    assert "save-artifacts-invoked" not in run_and_read(api, app_tag, "/sti-fake")


@METHODS
def test_failing_save_artifacts_gives_clean_build_with_message(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    failing_save = '#!/bin/sh\necho "save-artifacts: cannot save"\nexit 1\n'
    files = {
        "/usr/bin/prepare": PREPARE,
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": failing_save,
    }
    with temporary_image(api, files, name="failing-save") as builder:
        first, _ = build(docker_host, source, builder, app_tag, method=method)
        assert_succeeded(first)
        second, lines = build(docker_host, source, builder, app_tag, method=method)
    assert_succeeded(second)
    assert second.incremental is False
    expected = (
        f"Saving artifacts from {app_tag} failed: /usr/bin/save-artifacts exited with code 1; "
        "doing a clean build instead"
    )
    assert expected in second.messages
    assert "save-artifacts: cannot save" in lines
    assert "save-artifacts: cannot save" in second.messages
    assert second.image_id == api.inspect_image(app_tag)["Id"]
    assert "save-artifacts-invoked" not in run_and_read(api, app_tag, "/sti-fake")


# failures


@METHODS
def test_failing_prepare_fails_with_build_failed_and_creates_no_tag(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, lines = build(docker_host, source, images["sti-fake-failing"], app_tag, method=method)
    assert result.success is False
    assert result.error_code == "BuildFailed"
    assert result.image_id is None
    assert any("exited with code 3" in message for message in result.messages)
    assert "exited with code 3" in result.to_json()["error"]["message"]
    assert "prepare: about to fail" in result.messages
    assert "prepare: about to fail" in lines
    assert image_id_or_none(api, app_tag) is None
    assert images_of_build(api, result.build_id) == []


@METHODS
def test_failing_prepare_leaves_existing_tag_on_old_image(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    first, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(first)
    old_id = api.inspect_image(app_tag)["Id"]
    # the previous image has save-artifacts, so this build is incremental until prepare fails
    result, _ = build(docker_host, source, images["sti-fake-failing"], app_tag, method=method)
    assert result.success is False
    assert result.error_code == "BuildFailed"
    assert api.inspect_image(app_tag)["Id"] == old_id
    assert images_of_build(api, result.build_id) == []


def test_missing_builder_image_fails_with_pull_image_failed(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    missing = f"sti-test/does-not-exist-{uuid.uuid4().hex[:10]}"
    result, _ = build(docker_host, source, missing, app_tag)
    assert result.success is False
    assert result.error_code == "PullImageFailed"
    assert missing in result.to_json()["error"]["message"]
    assert image_id_or_none(api, app_tag) is None


@METHODS
def test_broken_builder_fails_with_invalid_image_naming_image_and_prepare(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    broken = images["sti-fake-broken"]
    result, _ = build(docker_host, source, broken, app_tag, method=method)
    assert result.success is False
    assert result.error_code == "InvalidImage"
    message = result.to_json()["error"]["message"]
    assert broken in message
    assert "/usr/bin/prepare" in message
    assert image_id_or_none(api, app_tag) is None


# images with an ENTRYPOINT


@METHODS
def test_builder_with_entrypoint_builds_and_output_keeps_entrypoint(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    result, _ = build(docker_host, source, images["sti-fake-entrypoint"], app_tag, method=method)
    assert_succeeded(result)
    config = image_config(api, app_tag)
    assert config["Entrypoint"] == ["/bin/false"]
    assert config["Cmd"] == ["/usr/bin/run"]
    # the default command would be /bin/false /usr/bin/run: look without running
    files = image_files(api, app_tag, "/sti-fake")
    assert "prepare-invoked" in files
    assert files["src/index.html"] == SOURCE_FILES["index.html"]


@METHODS
def test_incremental_build_with_entrypoint_builder(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    builder = images["sti-fake-entrypoint"]
    assert_succeeded(build(docker_host, source, builder, app_tag, method=method)[0])
    second, _ = build(docker_host, source, builder, app_tag, method=method)
    assert_succeeded(second)
    assert second.incremental is True
    assert "save-artifacts-invoked" in image_files(api, app_tag, "/sti-fake")
    assert image_config(api, app_tag)["Entrypoint"] == ["/bin/false"]


# logs and the result object


@METHODS
def test_prepare_output_lines_reach_the_sink(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, source: str, method: str
) -> None:
    result, lines = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(result)
    assert "prepare: building" in lines
    assert "prepare: done" in lines
    assert lines.index("prepare: building") < lines.index("prepare: done")


@METHODS
def test_result_json_has_every_contract_field_and_round_trips(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, source: str, method: str
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert_succeeded(result)
    data = result.to_json()
    assert set(data) >= CONTRACT_FIELDS  # fields added beyond the contract are allowed
    assert data["schema"] == "sti.result/1"
    assert data["kind"] == "build"
    assert data["build_id"] == result.build_id
    assert data["success"] is True
    assert data["error"] is None
    assert data["tag"] == app_tag
    assert data["image_id"].startswith("sha256:")
    assert data["incremental"] is False
    assert data["method"] == method
    assert data["runtime_image"] is None
    assert data["host"] == "test"
    assert isinstance(data["duration_s"], float)
    assert data["duration_s"] > 0
    assert all(isinstance(m, str) for m in data["messages"])
    names = [step["name"] for step in data["steps"]]
    assert names == ["fetch_source", "check_images", "save_artifacts", "build", "tag"]
    assert all(set(step) == {"name", "duration_s"} for step in data["steps"])
    assert json.loads(json.dumps(data)) == data
    assert Result.from_json(json.loads(json.dumps(data))).to_json() == data


def test_failed_result_json_has_every_contract_field_and_round_trips(
    docker_host: DockerHost, images: dict[str, str], app_tag: str, source: str
) -> None:
    result, _ = build(docker_host, source, images["sti-fake-failing"], app_tag)
    data = result.to_json()
    assert set(data) >= CONTRACT_FIELDS
    assert data["success"] is False
    assert data["image_id"] is None
    assert set(data["error"]) == {"code", "message"}
    assert data["error"]["code"] == "BuildFailed"
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    "method",
    [
        "build",
        "run",
    ],
)
def test_failing_prepare_leaves_no_intermediate_images(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    # a builder of this test's own, so no other build can add children to it meanwhile
    files = {
        "/usr/bin/prepare": '#!/bin/sh\necho "prepare: about to fail"\nexit 3\n',
        "/usr/bin/run": RUN,
        "/etc/sti-test-id": uuid.uuid4().hex,
    }
    with temporary_image(api, files, name="failing-unique") as builder:
        base = api.inspect_image(builder)["Id"]
        result, _ = build(docker_host, source, builder, app_tag, method=method, env={"FOO": "bar"})
        assert result.error_code == "BuildFailed"
        leaked = descendants(api, base)
        remove_images(api, leaked)  # leave nothing behind, whatever the outcome
    assert leaked == []


@pytest.mark.parametrize(
    "method",
    ["build", "run"],
)
def test_prepare_stderr_lines_arrive_without_terminal_escape_codes(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    prepare = '#!/bin/sh\necho "prepare: out"\necho "prepare: err" >&2\nexit 3\n'
    with temporary_image(api, {"/usr/bin/prepare": prepare, "/usr/bin/run": RUN}) as builder:
        result, lines = build(docker_host, source, builder, app_tag, method=method)
    assert result.error_code == "BuildFailed"
    assert "prepare: out" in result.messages
    assert not any("\x1b" in line for line in lines)
    assert not any("\x1b" in message for message in result.messages)
    assert "prepare: err" in lines
    assert "prepare: err" in result.messages


def test_failing_onbuild_trigger_is_not_blamed_on_prepare(
    api: docker.APIClient, buildkit_host: DockerHost, app_tag: str, source: str
) -> None:
    files = {"/usr/bin/prepare": PREPARE, "/usr/bin/run": RUN}
    lines = ["ONBUILD RUN exit 5", 'CMD ["/bin/sh"]']
    with temporary_image(api, files, lines, name="onbuild") as builder:
        result, output = build(buildkit_host, source, builder, app_tag, method="build")
    assert result.success is False
    assert "prepare: building" not in output  # prepare never ran
    assert "/usr/bin/prepare" not in result.to_json()["error"]["message"]


@METHODS
def test_a_rebuild_removes_the_image_its_tag_named_before_unless_in_use(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
    method: str,
) -> None:
    first, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    second, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert first.image_id and second.image_id and first.image_id != second.image_id
    with pytest.raises(docker.errors.ImageNotFound):
        api.inspect_image(first.image_id)
    in_use = api.create_container(second.image_id, name=f"test-keep-{uuid.uuid4().hex[:8]}")
    try:
        third, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
        assert third.success
        assert api.inspect_image(second.image_id)  # a container still uses it
    finally:
        api.remove_container(in_use, force=True)
        api.remove_image(second.image_id, force=True)
    users_tag = f"{app_tag}-kept:v1"
    api.tag(third.image_id, users_tag)
    try:
        fourth, _ = build(docker_host, source, images["sti-fake"], app_tag, method=method)
        assert fourth.success
        assert api.inspect_image(users_tag)["Id"] == third.image_id  # the user's own tag stays
    finally:
        api.remove_image(users_tag, force=True)
