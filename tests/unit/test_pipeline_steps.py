"""The build pipeline without an engine: which steps a request runs, in which order; the state
between steps as JSON; how a failing step is recorded. A fake host stands in where a step is
run; nothing here reaches Docker."""

from __future__ import annotations

import json
import uuid

from sti.errors import BuildFailed
from sti.model import BuildRequest, Step
from sti_worker.engine.methods import SavedArtifacts
from sti_worker.engine.pipeline import (
    BaseImage,
    BuildState,
    Workbench,
    result_of,
    run_step,
    save_artifacts_step,
    stages_for,
    steps_for,
)
from sti_worker.engine.protocol import ORIGINAL, Scripts
from tests.unit.fake_docker import FakeDocker

SOURCE, BUILDER, TAG = "https://git.example/app.git", "acme/builder", "acme/app"


def names(request: BuildRequest) -> list[str]:
    return [name for name, _ in steps_for(request)]


def test_a_plain_build_fetches_checks_saves_builds_and_tags() -> None:
    request = BuildRequest(SOURCE, BUILDER, TAG)
    assert names(request) == ["fetch_source", "check_images", "save_artifacts", "build", "tag"]


def test_an_extended_build_deploys_into_the_runtime_image_before_tagging() -> None:
    request = BuildRequest(SOURCE, BUILDER, TAG, runtime_image="acme/runtime")
    assert names(request) == [
        "fetch_source",
        "check_images",
        "save_artifacts",
        "build",
        "deploy",
        "tag",
    ]


def test_a_push_build_pushes_last_after_tagging() -> None:
    plain = BuildRequest(SOURCE, BUILDER, "registry.example:5000/app", push=True)
    assert names(plain)[-2:] == ["tag", "push"]
    extended = BuildRequest(
        SOURCE, BUILDER, "registry.example:5000/app", push=True, runtime_image="acme/runtime"
    )
    assert names(extended)[-3:] == ["deploy", "tag", "push"]


def test_a_worker_runs_the_steps_in_stages_joining_the_quick_ones() -> None:
    plain = BuildRequest(SOURCE, BUILDER, TAG)
    assert stages_for(plain) == [["fetch_source", "check_images", "save_artifacts", "build", "tag"]]
    pushed = BuildRequest(
        SOURCE, BUILDER, "registry.example:5000/app", push=True, runtime_image="acme/runtime"
    )
    assert stages_for(pushed) == [
        ["fetch_source", "check_images", "save_artifacts", "build"],
        ["deploy", "tag", "push"],
    ]
    for request in (plain, pushed):
        assert [step for stage in stages_for(request) for step in stage] == names(request)


def test_clean_and_incremental_builds_run_the_same_steps() -> None:
    """A clean build still runs save_artifacts, which then does nothing (below)."""
    for method in ("build", "run"):
        clean = BuildRequest(SOURCE, BUILDER, TAG, clean=True, method=method)
        incremental = BuildRequest(SOURCE, BUILDER, TAG, method=method)
        assert names(clean) == names(incremental)


def test_a_clean_build_saves_no_artifacts_and_asks_the_engine_nothing() -> None:
    fake = FakeDocker()
    lines: list[str] = []
    state = BuildState(BuildRequest(SOURCE, BUILDER, TAG, clean=True), host="host-a")
    after = save_artifacts_step(fake.bench(lines.append), state)
    assert fake.calls == []
    assert not after.incremental and after.artifacts_container is None
    assert after.messages == ("Clean build: previous artifacts are not reused",)
    assert lines == list(after.messages)


def full_state() -> BuildState:
    request = BuildRequest(
        SOURCE,
        BUILDER,
        TAG,
        env={"A": "1"},
        runtime_image="acme/runtime",
        ref="main",
        exclude=("*.log",),
    )
    s2i = Scripts("s2i", "/s2i/assemble", "/s2i/run", "/s2i/save-artifacts")
    return BuildState(
        request=request,
        host="host-a",
        started_at=1_700_000_000.25,
        source_dir="/tmp/sti-x/upload/src",
        source_streamed=True,
        revision="f" * 40,
        builder=BaseImage("sha256:" + "1" * 64, ORIGINAL, ("/bin/entry", "-x"), (1001, 0), "1001"),
        runtime=BaseImage("sha256:" + "2" * 64, s2i),
        artifacts_container="c0ffee",
        artifacts_tar="/tmp/sti-x/artifacts.tar",
        saved_from=SavedArtifacts(
            "sha256:" + "3" * 64, "/usr/bin/save-artifacts", (1001, 0), "/app"
        ),
        incremental=True,
        stage_image="sha256:" + "4" * 64,
        image_id="sha256:" + "5" * 64,
        tagged=True,
        replaced_images=("sha256:" + "6" * 64, "sha256:" + "7" * 64),
        digest="sha256:" + "8" * 64,
        messages=("one", "two"),
        steps=(Step("fetch_source", 0.5), Step("build", 12.125)),
        error={"code": "PushImageFailed", "message": "registry said no"},
    )


def test_a_build_state_survives_the_trip_through_a_task_message() -> None:
    state = full_state()
    text = json.dumps(state.to_json())
    assert BuildState.from_json(json.loads(text)) == state


def test_a_fresh_build_state_survives_the_trip_too() -> None:
    state = BuildState(BuildRequest(SOURCE, BUILDER, TAG), host="host-a")
    assert BuildState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_a_result_names_the_image_only_once_it_is_tagged() -> None:
    state = full_state()
    assert result_of(state).image_id == state.image_id
    assert result_of(state).error_code == "PushImageFailed"
    untagged = BuildState.from_json({**state.to_json(), "tagged": False, "error": None})
    result = result_of(untagged)
    assert result.image_id is None and result.success


def test_a_failing_step_is_recorded_in_the_state_and_later_steps_are_skipped() -> None:
    lines: list[str] = []
    ran: list[str] = []

    def failing(bench: Workbench, state: BuildState) -> BuildState:
        ran.append("failing")
        raise BuildFailed("prepare exited 3", details=["last output lines:", "boom"])

    def later(bench: Workbench, state: BuildState) -> BuildState:
        ran.append("later")
        return state

    fake = FakeDocker()
    state = BuildState(BuildRequest(SOURCE, BUILDER, TAG, build_id=uuid.uuid4().hex), "host-a")
    state = run_step("build", failing, fake.bench(lines.append), state)
    state = run_step("tag", later, fake.bench(lines.append), state)
    assert ran == ["failing"]
    assert state.error == {"code": "BuildFailed", "message": "prepare exited 3"}
    assert state.messages == ("prepare exited 3", "last output lines:", "boom")
    assert [step.name for step in state.steps] == ["build"]
    assert lines == ["Build failed: prepare exited 3"]
    assert fake.calls == []


def test_an_unexpected_exception_in_a_step_is_an_internal_error() -> None:
    def broken(bench: Workbench, state: BuildState) -> BuildState:
        raise KeyError("surprise")

    state = BuildState(BuildRequest(SOURCE, BUILDER, TAG), "host-a")
    state = run_step("build", broken, FakeDocker().bench(), state)
    assert state.failed and state.error is not None
    assert state.error["code"] == "InternalError"
    assert "KeyError" in state.error["message"]
