"""sti-submit build|validate --local, run as the installed console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import docker
import pytest

from tests.dockertools import (
    CONTRACT_FIELDS,
    TRACKER,
    image_env,
    image_files,
    image_id_or_none,
)


def _sti_submit() -> str:
    bin_dir = Path(sys.executable).parent
    found = shutil.which("sti-submit", path=str(bin_dir)) or shutil.which("sti-submit")
    if not found:
        pytest.fail(f"the sti-submit console script is not installed (looked in {bin_dir})")
    return found


STI_SUBMIT = _sti_submit()


def sti_submit(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STI_BROKER_URL",)}
    return subprocess.run(
        [STI_SUBMIT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def json_result(completed: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """The one JSON object --json prints: stdout must be exactly that object."""
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, completed.stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    if isinstance(data.get("image_id"), str):
        TRACKER.built(data["image_id"])
    return data


@pytest.mark.parametrize("method", ["build", "run"])
def test_build_json_prints_one_result_object_and_exits_0(
    api: docker.APIClient, images: dict[str, str], app_tag: str, source: str, method: str
) -> None:
    completed = sti_submit(
        "build", source, images["sti-fake"], app_tag, "--local", "--json", "-m", method
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    data = json_result(completed)
    assert set(data) >= CONTRACT_FIELDS
    assert data["success"] is True
    assert data["kind"] == "build"
    assert data["tag"] == app_tag
    assert data["method"] == method
    assert data["image_id"] == api.inspect_image(app_tag)["Id"]


def test_build_without_json_prints_messages_and_outcome(
    images: dict[str, str], app_tag: str, source: str
) -> None:
    completed = sti_submit("build", source, images["sti-fake"], app_tag, "--local")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Build succeeded" in completed.stdout
    assert app_tag in completed.stdout
    # live log lines (prepare's output) go to stderr
    assert "prepare: building" in completed.stderr
    assert "prepare: building" not in completed.stdout


def test_build_quiet_prints_no_log_lines(images: dict[str, str], app_tag: str, source: str) -> None:
    completed = sti_submit("build", source, images["sti-fake"], app_tag, "--local", "-q")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "prepare: building" not in completed.stderr


def test_build_with_failing_prepare_exits_1(
    api: docker.APIClient, images: dict[str, str], app_tag: str, source: str
) -> None:
    completed = sti_submit(
        "build", source, images["sti-fake-failing"], app_tag, "--local", "--json"
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    data = json_result(completed)
    assert data["success"] is False
    assert data["error"] == {
        "code": "BuildFailed",
        "message": "/usr/bin/prepare exited with code 3",
    }
    assert image_id_or_none(api, app_tag) is None


def test_build_with_missing_image_exits_3(
    images: dict[str, str], app_tag: str, source: str
) -> None:
    missing = f"sti-test/does-not-exist-{uuid.uuid4().hex[:10]}"
    completed = sti_submit("build", source, missing, app_tag, "--local", "--json")
    assert completed.returncode == 3, completed.stdout + completed.stderr
    data = json_result(completed)
    assert data["success"] is False
    assert data["error"]["code"] == "PullImageFailed"  # type: ignore[index]


@pytest.mark.parametrize("tag", ["Bad/Tag", "a b", "-x"])
def test_build_with_bad_tag_exits_2_naming_the_tag(
    images: dict[str, str], source: str, tag: str
) -> None:
    completed = sti_submit("build", source, images["sti-fake"], "--local", "--", tag)
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert repr(tag) in completed.stderr or tag in completed.stderr


def test_build_with_bad_tag_exits_2(images: dict[str, str], source: str) -> None:
    completed = sti_submit("build", source, images["sti-fake"], "Bad/Tag", "--local", "--json")
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "Bad/Tag" in completed.stderr
    assert "not a valid image reference" in completed.stderr


@pytest.mark.parametrize("env", ["1A=2", "NOVALUE"])
def test_build_with_bad_env_exits_2(
    images: dict[str, str], app_tag: str, source: str, env: str
) -> None:
    completed = sti_submit("build", source, images["sti-fake"], app_tag, "--local", "-e", env)
    assert completed.returncode == 2, completed.stdout + completed.stderr


def test_build_with_missing_source_exits_2(
    images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-dir")
    completed = sti_submit("build", missing, images["sti-fake"], app_tag, "--local", "--json")
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert json_result(completed)["error"]["code"] == "InvalidInput"  # type: ignore[index]


def test_build_with_env_comma_list(
    api: docker.APIClient, images: dict[str, str], app_tag: str, source: str
) -> None:
    completed = sti_submit(
        "build",
        source,
        images["sti-fake-env"],
        app_tag,
        "--local",
        "--json",
        "-e",
        "A=1,B=2",
        "-e",
        "FOO=1,BAR=2",
        "--env",
        "BAZ=a,b",
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert json_result(completed)["success"] is True
    files = image_files(api, app_tag, "/sti-fake")
    assert (files["FOO"], files["BAR"], files["BAZ"]) == (b"1", b"2", b"a,b")
    env = image_env(api, app_tag)
    assert (env["A"], env["B"]) == ("1", "2")
    assert "A=1" in files["env"].decode().splitlines()
    assert "B=2" in files["env"].decode().splitlines()


def test_extended_build_tags_both_images(
    api: docker.APIClient, images: dict[str, str], app_tag: str, source: str
) -> None:
    completed = sti_submit(
        "build",
        source,
        images["sti-fake-builder"],
        app_tag,
        "-R",
        images["sti-fake"],
        "--local",
        "--json",
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert json_result(completed)["runtime_image"] == images["sti-fake"]
    assert image_id_or_none(api, app_tag) is not None
    assert image_id_or_none(api, f"{app_tag}-build") is not None


def test_validate_good_image_exits_0(images: dict[str, str]) -> None:
    completed = sti_submit("validate", images["sti-fake"], "--local")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"Base image {images['sti-fake']} is valid" in completed.stdout


def test_validate_broken_image_exits_1_with_message_on_stdout(images: dict[str, str]) -> None:
    broken = images["sti-fake-broken"]
    completed = sti_submit("validate", broken, "--local")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert (
        f"Base image {broken} failed validation: missing /usr/bin/prepare"
        in completed.stdout.splitlines()
    )


def test_validate_json(images: dict[str, str]) -> None:
    completed = sti_submit("validate", images["sti-fake-no-save"], "-I", "--local", "--json")
    assert completed.returncode == 1, completed.stdout + completed.stderr
    data = json_result(completed)
    assert data["kind"] == "validate"
    assert data["success"] is False
    assert any("/usr/bin/save-artifacts" in m for m in data["messages"])  # type: ignore[union-attr]


def test_validate_extended_with_runtime(images: dict[str, str]) -> None:
    completed = sti_submit(
        "validate", images["sti-fake-builder"], "-R", images["sti-fake"], "--local"
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"Runtime image {images['sti-fake']} is valid" in completed.stdout


def test_validate_missing_image_exits_3(images: dict[str, str]) -> None:
    missing = f"sti-test/does-not-exist-{uuid.uuid4().hex[:10]}"
    completed = sti_submit("validate", missing, "--local", "--json")
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert json_result(completed)["error"]["code"] == "PullImageFailed"  # type: ignore[index]


def test_unreachable_docker_exits_3(images: dict[str, str], app_tag: str, source: str) -> None:
    completed = sti_submit(
        "build",
        source,
        images["sti-fake"],
        app_tag,
        "--local",
        "--json",
        "-U",
        "unix:///nonexistent/docker.sock",
    )
    assert completed.returncode == 3, completed.stdout + completed.stderr
    assert json_result(completed)["error"]["code"] == "DockerConnectionFailed"  # type: ignore[index]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stopped_local_build_removes_its_container_and_exits_4(
    api: docker.APIClient, images: dict[str, str], app_tag: str, source: str, stop: signal.Signals
) -> None:
    """A `timeout`, a CI job or a closed terminal stops sti-submit with SIGTERM or SIGHUP, a user
    with Ctrl-C: the running build's container goes with it (nothing_left_behind checks too)."""
    env = {k: v for k, v in os.environ.items() if k != "STI_BROKER_URL"}
    builder = images["sti-fake-slow"]
    command = [STI_SUBMIT, "build", source, builder, app_tag, "--local"]
    process = subprocess.Popen(
        [*command, "-e", "SLEEP=60", "-m", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not _sti_containers_of(api, builder) and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.2)
        assert _sti_containers_of(api, builder), "the build never started its container"
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 4, stderr
    assert "Interrupted" in stderr
    assert _sti_containers_of(api, builder) == []
    assert _sti_containers_of(api, builder, stopped_too=True) == []
    assert image_id_or_none(api, app_tag) is None


def _sti_containers_of(
    api: docker.APIClient, builder: str, *, stopped_too: bool = False
) -> list[str]:
    """sti's containers of this builder only: a container another run left on the host is not
    this test's to judge."""
    filters = {"name": "^/sti-", "ancestor": builder}
    return [c["Id"] for c in api.containers(all=stopped_too, filters=filters)]
