"""Cleanup and the tag step's rollback, against a fake Docker host (tests/unit/fake_docker.py):
a build removes what it made and the images its tags named before, and nothing of anyone else;
a tagging that fails half-way puts every tag back where it was."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import pytest

from sti.errors import TagImageFailed
from sti.model import BuildRequest
from sti_worker.engine.pipeline import (
    BuildState,
    cleanup,
    cleanup_build,
    run_step,
    tag_step,
    trim_build_cache,
    workdir_for,
)
from tests.unit.fake_docker import FakeDocker

SOURCE, BUILDER = "https://git.example/app.git", "acme/builder"
APP, APP_BUILD = "acme/app", "acme/app-build"


def image(name: str) -> str:
    return f"sha256:{name}"


@pytest.fixture(autouse=True)
def own_tmpdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Work dirs (TMPDIR/sti-<build id>) go in this test's own directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def request(build_id: str, *, extended: bool = False) -> BuildRequest:
    runtime = "acme/runtime" if extended else None
    return BuildRequest(SOURCE, BUILDER, APP, runtime_image=runtime, build_id=build_id)


def a_host_with_two_builds(build_id: str, other: str) -> FakeDocker:
    """This build's containers, base reference and images, another build's, a user's container,
    and the images the tags named before."""
    fake = FakeDocker()
    for build in (build_id, other):
        fake.add_container(f"sti-{build}-artifacts")
        fake.add_container(f"sti-{build}-extract")
        fake.references[f"sti-base-{build}:build"] = image("builder")
        fake.add_image(image(f"layer-{build}"), build)  # an untagged intermediate image
    fake.add_container("web-1", image("old-app"))
    fake.add_image(image("builder"), None, f"{BUILDER}:latest")
    fake.add_image(image("old-app"), "an-earlier-build", APP)
    fake.add_image(image("old-app-build"), "an-earlier-build", APP_BUILD)
    fake.add_image(image("new-app"), build_id)
    fake.add_image(image("new-stage"), build_id)
    return fake


def test_a_failed_build_leaves_nothing_of_its_own_and_touches_nothing_else(
    own_tmpdir: Path,
) -> None:
    build_id, other = uuid.uuid4().hex, uuid.uuid4().hex
    fake = a_host_with_two_builds(build_id, other)
    workdir = workdir_for(build_id)
    (workdir / "upload").mkdir(parents=True)
    other_workdir = workdir_for(other)
    other_workdir.mkdir()
    state = BuildState(
        request(build_id, extended=True),
        "host-a",
        stage_image=image("new-stage"),
        image_id=image("new-app"),
        error={"code": "BuildFailed", "message": "runtime prepare exited 1"},
    )

    cleanup(fake.as_host(), state)

    assert sorted(fake.containers) == [f"sti-{other}-artifacts", f"sti-{other}-extract", "web-1"]
    assert sorted(fake.references) == sorted(
        [APP, APP_BUILD, f"{BUILDER}:latest", f"sti-base-{other}:build"]
    )
    assert sorted(fake.labels) == sorted(
        map(image, ["builder", "old-app", "old-app-build", f"layer-{other}"])
    )
    assert not workdir.exists()
    assert other_workdir.exists()
    removed = [target for call, target in fake.calls if call == "remove_image"]
    assert set(removed) == set(map(image, ["new-app", "new-stage", f"layer-{build_id}"]))


def test_a_tagged_build_keeps_its_images_and_removes_the_ones_it_replaced_unless_in_use() -> None:
    build_id, other = uuid.uuid4().hex, uuid.uuid4().hex
    fake = a_host_with_two_builds(build_id, other)
    # the tags moved to the new images; old-app is still used by the container web-1
    fake.references[APP], fake.references[APP_BUILD] = image("new-app"), image("new-stage")
    state = BuildState(
        request(build_id, extended=True),
        "host-a",
        stage_image=image("new-stage"),
        image_id=image("new-app"),
        tagged=True,
        replaced_images=(image("old-app-build"), image("old-app")),
    )

    cleanup(fake.as_host(), state)

    assert image("new-app") in fake.labels and image("new-stage") in fake.labels
    assert image("old-app-build") not in fake.labels
    assert image("old-app") in fake.labels  # in use
    assert image(f"layer-{build_id}") not in fake.labels
    assert image(f"layer-{other}") in fake.labels
    assert fake.references[APP] == image("new-app")
    assert fake.references[APP_BUILD] == image("new-stage")


def test_cleanup_knowing_only_the_build_id_without_an_engine_removes_the_work_dir() -> None:
    build_id = uuid.uuid4().hex
    workdir = workdir_for(build_id)
    workdir.mkdir()
    (workdir / "source.tar").write_bytes(b"x")
    cleanup_build(None, build_id)
    assert not workdir.exists()


def test_cleanup_of_a_build_that_made_nothing_removes_nothing() -> None:
    build_id, other = uuid.uuid4().hex, uuid.uuid4().hex
    fake = FakeDocker()
    fake.add_container(f"sti-{other}-artifacts")
    fake.add_image(image("app"), other, APP)
    cleanup_build(fake.as_host(), build_id)
    removing = {"remove_container", "remove_reference", "remove_image"}
    assert [call for call in fake.calls if call[0] in removing] == []
    assert ("containers_named", f"sti-{build_id}-") in fake.calls
    assert ("references_in", f"sti-base-{build_id}") in fake.calls


# the tag step


def test_tagging_moves_the_tag_and_notes_the_image_it_replaced() -> None:
    fake = FakeDocker()
    fake.add_image(image("old-app"), "an-earlier-build", APP)
    state = BuildState(request(uuid.uuid4().hex), "host-a", image_id=image("new-app"))
    lines: list[str] = []
    after = tag_step(fake.bench(lines.append), state)
    assert fake.references[APP] == image("new-app")
    assert after.tagged and after.replaced_images == (image("old-app"),)
    assert lines == [f"Tagged image new-app as {APP}"]


def test_a_first_build_replaces_nothing() -> None:
    fake = FakeDocker()
    state = BuildState(request(uuid.uuid4().hex), "host-a", image_id=image("new-app"))
    after = tag_step(fake.bench(), state)
    assert after.tagged and after.replaced_images == ()


def test_an_extended_build_tags_the_builder_result_first_then_the_app() -> None:
    fake = FakeDocker()
    state = BuildState(
        request(uuid.uuid4().hex, extended=True),
        "host-a",
        stage_image=image("new-stage"),
        image_id=image("new-app"),
    )
    tag_step(fake.bench(), state)
    tagged = [target for call, target in fake.calls if call == "tag"]
    assert tagged == [f"{image('new-stage')} {APP_BUILD}", f"{image('new-app')} {APP}"]


def test_a_failed_tag_puts_back_the_tags_already_moved() -> None:
    fake = FakeDocker(refuse_tags={APP})
    fake.add_image(image("old-app"), "an-earlier-build", APP)
    fake.add_image(image("old-app-build"), "an-earlier-build", APP_BUILD)
    state = BuildState(
        request(uuid.uuid4().hex, extended=True),
        "host-a",
        stage_image=image("new-stage"),
        image_id=image("new-app"),
    )
    with pytest.raises(TagImageFailed):
        tag_step(fake.bench(), state)
    assert fake.references[APP] == image("old-app")
    assert fake.references[APP_BUILD] == image("old-app-build")
    tagged = [target for call, target in fake.calls if call == "tag"]
    assert tagged == [
        f"{image('new-stage')} {APP_BUILD}",
        f"{image('new-app')} {APP}",
        f"{image('old-app-build')} {APP_BUILD}",
    ]


def test_a_failed_first_tagging_removes_the_tags_it_made() -> None:
    fake = FakeDocker(refuse_tags={APP})
    state = BuildState(
        request(uuid.uuid4().hex, extended=True),
        "host-a",
        stage_image=image("new-stage"),
        image_id=image("new-app"),
    )
    with pytest.raises(TagImageFailed):
        tag_step(fake.bench(), state)
    assert fake.references == {}
    assert ("untag", APP_BUILD) in fake.calls


def test_a_failed_tag_step_then_cleanup_leaves_the_previous_images_tagged_as_before() -> None:
    build_id = uuid.uuid4().hex
    fake = FakeDocker(refuse_tags={APP})
    fake.add_image(image("old-app"), "an-earlier-build", APP)
    fake.add_image(image("old-app-build"), "an-earlier-build", APP_BUILD)
    fake.add_image(image("new-app"), build_id)
    fake.add_image(image("new-stage"), build_id)
    state = BuildState(
        request(build_id, extended=True),
        "host-a",
        stage_image=image("new-stage"),
        image_id=image("new-app"),
    )
    state = run_step("tag", tag_step, fake.bench(), state)
    assert state.error is not None and state.error["code"] == "TagImageFailed"
    assert not state.tagged
    cleanup(fake.as_host(), state)
    assert fake.references == {APP: image("old-app"), APP_BUILD: image("old-app-build")}
    assert sorted(fake.labels) == [image("old-app"), image("old-app-build")]


def test_a_build_cache_that_cannot_be_trimmed_is_said_not_raised() -> None:
    fake = FakeDocker(trim_problem="Could not trim the engine's build cache: it is damaged")
    lines: list[str] = []
    trim_build_cache(fake.as_host(), lines.append)
    trim_build_cache(None, lines.append)
    assert lines == ["Could not trim the engine's build cache: it is damaged"]
