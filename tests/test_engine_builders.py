"""The build method on both of the engine's builders (BuildKit and legacy): the same image, the
same errors, live output, cancel that leaves nothing, a bounded build cache, and restored
artifacts that are not stored twice."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from sti.errors import InvalidInput
from sti.model import BuildRequest, Result
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.methods import BASE_REPOSITORY_PREFIX
from sti_worker.engine.pipeline import run_build, trim_build_cache
from sti_worker.engine.sandbox import Sandbox
from tests.dockertools import (
    TRACKER,
    build_cache_bytes,
    four_mebibyte_source,
    image_config,
    image_env,
    image_files,
    images_of_build,
    run_and_read,
    temporary_image,
)
from tests.engine_helpers import build
from tests.images import RUN

BUILDERS = pytest.mark.parametrize("builder", ["buildkit", "legacy"])


@pytest.fixture
def builder_host(builder: str) -> Iterator[DockerHost]:
    host = DockerHost(builder=builder, sandbox=Sandbox.engine_defaults())
    yield host
    host.close()


def test_prepare_runs_in_a_container_while_the_default_limits_hold(
    docker_host: DockerHost,
) -> None:
    assert docker_host.builder == "container"


def test_this_engine_builds_with_buildkit_when_the_limits_are_lifted() -> None:
    host = DockerHost(sandbox=Sandbox.engine_defaults())
    try:
        assert host.builder == "buildkit"
    finally:
        host.close()


def test_the_legacy_builder_is_chosen_when_it_holds_the_limits() -> None:
    host = DockerHost(sandbox=Sandbox(memory_bytes=64 * 1024**2, pids=0, privileges="engine"))
    try:
        assert host.builder == "legacy"
    finally:
        host.close()


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_an_engine_builder_that_cannot_hold_the_limits_is_refused(builder: str) -> None:
    with pytest.raises(
        InvalidInput, match=f"STI_BUILDER={builder} cannot hold .*STI_BUILD_PIDS=4096"
    ):
        DockerHost(builder=builder)


def test_an_unknown_builder_setting_is_refused() -> None:
    with pytest.raises(InvalidInput, match="STI_BUILDER='kaniko' is unknown"):
        DockerHost(builder="kaniko")


@BUILDERS
def test_both_builders_give_the_same_image(
    api: docker.APIClient,
    builder_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    env = {"FOO": 'spaces "quotes" $dollar\nnewline', "BAR": "b"}
    result, lines = build(builder_host, source, images["sti-fake-env"], app_tag, env=env)
    assert result.success, result.messages
    config = image_config(api, app_tag)
    assert config["Cmd"] == ["/usr/bin/run"]
    assert config["Labels"]["io.sti.build-id"] == result.build_id
    assert image_env(api, app_tag)["FOO"] == env["FOO"]
    files = run_and_read(api, app_tag, "/sti-fake")
    assert files["FOO"] == env["FOO"].encode()
    assert "prepare: recording FOO, BAR and BAZ" in lines
    assert set(image_files(api, app_tag, "/tmp/src")) >= {"index.html", "nested/notes.md"}


@BUILDERS
def test_variables_named_like_the_generated_arguments_change_no_other_value(
    api: docker.APIClient,
    builder_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    env = {"STI_ENV_1": "one", "FOO": "foo", "STI_ENV_0": "zero", "BAR": "${STI_ENV_0}"}
    result, _ = build(builder_host, source, images["sti-fake-env"], app_tag, env=env)
    assert result.success, result.messages
    assert {name: image_env(api, app_tag)[name] for name in env} == env
    assert run_and_read(api, app_tag, "/sti-fake")["FOO"] == b"foo"


@BUILDERS
def test_both_builders_keep_the_builders_entrypoint(
    api: docker.APIClient,
    builder_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    result, _ = build(builder_host, source, images["sti-fake-entrypoint"], app_tag)
    assert result.success, result.messages
    builder_entrypoint = image_config(api, images["sti-fake-entrypoint"])["Entrypoint"]
    assert image_config(api, app_tag)["Entrypoint"] == builder_entrypoint


@BUILDERS
def test_both_builders_report_prepares_exit_code_and_last_lines(
    api: docker.APIClient,
    builder_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    result, lines = build(builder_host, source, images["sti-fake-failing"], app_tag)
    assert result.error_code == "BuildFailed"
    assert result.to_json()["error"]["message"] == "/usr/bin/prepare exited with code 3"
    assert "prepare: about to fail" in result.messages
    assert "prepare: about to fail" in lines
    assert not api.images(name=app_tag)
    assert images_of_build(api, result.build_id) == []


@BUILDERS
def test_both_builders_restore_artifacts_for_an_incremental_build(
    api: docker.APIClient,
    builder_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    build(builder_host, source, images["sti-fake"], app_tag)
    second, lines = build(builder_host, source, images["sti-fake"], app_tag)
    assert second.success and second.incremental, second.messages
    assert "prepare: found artifacts from a previous build" in lines
    assert "save-artifacts-invoked" in run_and_read(api, app_tag, "/sti-fake")


def test_no_temporary_base_reference_outlives_a_buildkit_build(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    result, _ = build(docker_host, source, images["sti-fake"], app_tag)
    failed, _ = build(docker_host, source, images["sti-fake-failing"], app_tag)
    assert result.success and not failed.success
    assert not [
        tag
        for image in api.images()
        for tag in image.get("RepoTags") or ()
        if tag.startswith(BASE_REPOSITORY_PREFIX)
    ]


# restored artifacts are inputs of prepare, not part of the output image

_DEPS_PREPARE = """\
#!/bin/sh
set -e
mkdir -p /opt/app
if [ -d /tmp/artifacts/deps ]; then
    echo "prepare: reusing dependencies"
    cp -R /tmp/artifacts/deps /opt/app/deps
else
    echo "prepare: fetching dependencies"
    mkdir -p /opt/app/deps
    dd if=/dev/urandom of=/opt/app/deps/blob bs=1024 count=4096 2>/dev/null
fi
"""

_DEPS_SAVE = """\
#!/bin/sh
set -e
cp -R /opt/app/deps /tmp/artifacts/deps
"""


@pytest.mark.parametrize(("method", "builder"), [("build", "buildkit"), ("run", "auto")])
def test_an_incremental_image_does_not_store_the_artifacts_twice(
    api: docker.APIClient, app_tag: str, source: str, method: str, builder: str
) -> None:
    files = {
        "/usr/bin/prepare": _DEPS_PREPARE,
        "/usr/bin/run": RUN,
        "/usr/bin/save-artifacts": _DEPS_SAVE,
    }
    host = DockerHost(builder=builder, sandbox=Sandbox.engine_defaults())
    try:
        with temporary_image(api, files, name="deps") as builder_image:
            clean, _ = build(host, source, builder_image, app_tag, method=method)
            clean_size = _size_over_base(api, clean.image_id, builder_image)
            incremental, lines = build(host, source, builder_image, app_tag, method=method)
            assert incremental.incremental and "prepare: reusing dependencies" in lines
            incremental_size = _size_over_base(api, incremental.image_id, builder_image)
    finally:
        host.close()
    assert clean_size > 4 * 1024 * 1024
    assert incremental_size <= clean_size * 1.05, (clean_size, incremental_size)


def _size_over_base(api: docker.APIClient, image: str | None, base: str) -> int:
    assert image
    return int(api.inspect_image(image)["Size"]) - int(api.inspect_image(base)["Size"])


# cancel


_MARKED_PREPARE = """\
#!/bin/sh
echo "prepare: started"
exec sleep {seconds}
"""


def _sleeping_processes(seconds: int) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", str(seconds).encode()]:
            found.append(cmdline.parent.name)
    return found


@BUILDERS
def test_an_aborted_build_stops_at_once_and_leaves_nothing(
    api: docker.APIClient, builder_host: DockerHost, app_tag: str, source: str
) -> None:
    seconds = 900 + uuid.uuid4().int % 99  # a sleep no other test runs
    files = {"/usr/bin/prepare": _MARKED_PREPARE.format(seconds=seconds), "/usr/bin/run": RUN}
    with temporary_image(api, files, name="sleeper") as builder_image:
        request = BuildRequest(source=source, build_image=builder_image, tag=app_tag)
        started = threading.Event()
        results: list[Result] = []

        def sink(line: str) -> None:
            if line == "prepare: started":
                started.set()

        thread = threading.Thread(
            target=lambda: results.append(run_build(builder_host, request, sink, host="test"))
        )
        thread.start()
        assert started.wait(60), "prepare never started"
        builder_host.abort(request.build_id)
        thread.join(30)
        assert not thread.is_alive()
    TRACKER.built(results[0].image_id)
    assert results[0].success is False
    assert not api.images(name=app_tag)
    assert images_of_build(api, request.build_id) == []
    deadline = time.monotonic() + 10
    while _sleeping_processes(seconds) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _sleeping_processes(seconds) == []


# the build cache


def test_a_build_leaves_the_cache_and_a_trim_brings_it_within_the_limit(
    api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """A build (--local's too) leaves the engine's cache to its owner; a worker trims it after
    its builds (test_queue_build_cache.py)."""
    source = four_mebibyte_source(tmp_path / "big")
    limited = DockerHost(
        builder="buildkit", build_cache_keep_bytes=1024 * 1024, sandbox=Sandbox.engine_defaults()
    )
    lines: list[str] = []
    try:
        build(limited, str(source), images["sti-fake"], app_tag, clean=True)
        assert build_cache_bytes(api) > 4 * 1024 * 1024
        trim_build_cache(limited, lines.append)
    finally:
        limited.close()
    assert build_cache_bytes(api) <= 1024 * 1024
    assert lines == []


def test_a_build_cache_record_the_engine_lost_is_cleared_and_the_build_runs_again(
    api: docker.APIClient,
    buildkit_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """Docker 20.10 can delete a layer that a BuildKit cache record still points at; every
    build reusing that record then fails "failed to prepare …: no such file or directory".
    Reproduced by moving away the snapshot directory of the record that holds the copied source."""
    overlay = Path(api.info()["DockerRootDir"]) / "overlay2"
    if not overlay.is_dir():
        pytest.skip("needs the engine's overlay2 directory on this machine")
    marker = f"marker-{uuid.uuid4().hex}"
    source = tmp_path / "src"
    source.mkdir()
    (source / marker).write_text("the same source twice\n")
    first, _ = build(buildkit_host, str(source), images["sti-fake"], app_tag, clean=True)
    assert first.success, first.messages
    snapshots = {path.parents[2] for path in overlay.glob(f"*/diff/tmp/src/{marker}")}
    assert snapshots
    # moved aside for the second build only: a record left pointing at a directory that is
    # gone for good would break the engine's `system df` and cache pruning for later tests
    hidden = {snapshot: tmp_path / f"hidden-{snapshot.name}" for snapshot in snapshots}
    try:
        for snapshot, aside in hidden.items():
            shutil.move(snapshot, aside)
        second, lines = build(buildkit_host, str(source), images["sti-fake"], app_tag, clean=True)
    finally:
        for snapshot, aside in hidden.items():
            shutil.move(aside, snapshot)
    api.df()  # the engine can size its cache again
    assert second.success, second.messages
    assert any("build cache is damaged" in line for line in lines)


# save-artifacts inside a BuildKit build


def test_a_buildkit_rebuild_runs_save_artifacts_in_a_stage_of_the_build(
    api: docker.APIClient,
    buildkit_host: DockerHost,
    images: dict[str, str],
    app_tag: str,
    source: str,
) -> None:
    build(buildkit_host, source, images["sti-fake"], app_tag)
    second, lines = build(buildkit_host, source, images["sti-fake"], app_tag)
    assert second.success and second.incremental, second.messages
    assert f"Saving artifacts from {app_tag} in a stage of the build" in lines
    assert "prepare: found artifacts from a previous build" in lines
    assert "save-artifacts-invoked" in run_and_read(api, app_tag, "/sti-fake")


def test_a_previous_image_holding_old_artifacts_has_them_saved_in_a_container(
    api: docker.APIClient, images: dict[str, str], app_tag: str, source: str
) -> None:
    unconfined = Sandbox.engine_defaults()
    legacy = DockerHost(builder="legacy", sandbox=unconfined)
    buildkit = DockerHost(builder="buildkit", sandbox=unconfined)
    try:
        build(legacy, source, images["sti-fake"], app_tag)
        build(legacy, source, images["sti-fake"], app_tag)  # COPYs the artifacts into the image
        assert "save-artifacts-invoked" in image_files(api, app_tag, "/tmp/artifacts")
        third, lines = build(buildkit, source, images["sti-fake"], app_tag)
    finally:
        legacy.close()
        buildkit.close()
    assert third.success and third.incremental, third.messages
    assert f"Saving artifacts from {app_tag}" in lines
    assert f"Saving artifacts from {app_tag} in a stage of the build" not in lines
