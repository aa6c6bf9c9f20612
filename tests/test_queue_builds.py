"""Builds and validations through the queue: sti-submit → Redis → sti-worker → result backend."""

from __future__ import annotations

import time
from pathlib import Path

import docker
import pytest
from celery import Celery

from sti.errors import InvalidInput
from sti.model import BuildRequest
from sti_submit.client import StiClient
from tests.dockertools import run_and_read
from tests.queue_helpers import json_result, make_source, sti_submit
from tests.services import Worker, free_port


@pytest.mark.parametrize("method", ["build", "run"])
def test_build_through_queue_tags_a_runnable_image(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    broker_url: str,
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    source = make_source(tmp_path)
    done = sti_submit(
        "build",
        str(source),
        images["sti-fake"],
        app_tag,
        "-m",
        method,
        "--broker",
        broker_url,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    result = json_result(done)
    assert result["success"] is True
    assert result["host"] == "host-a"
    assert result["method"] == method
    assert [step["name"] for step in result["steps"]] == [
        "fetch_source",
        "check_images",
        "save_artifacts",
        "build",
        "tag",
    ]
    files = run_and_read(api, app_tag, "/sti-fake")
    assert {"run-invoked", "prepare-invoked", "src/index.html", "src/static/style.css"} <= set(
        files
    )


def test_incremental_build_through_queue_reuses_artifacts(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    app_tag: str,
    tmp_path: Path,
) -> None:
    source = str(make_source(tmp_path))
    first = client.wait(client.submit_build(BuildRequest(source, images["sti-fake"], app_tag)))
    second = client.wait(client.submit_build(BuildRequest(source, images["sti-fake"], app_tag)))
    assert first.success and not first.incremental
    assert second.success and second.incremental
    assert "save-artifacts-invoked" in run_and_read(api, app_tag, "/sti-fake")


def test_extended_build_through_queue_tags_both_images(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    app_tag: str,
    tmp_path: Path,
) -> None:
    request = BuildRequest(
        str(make_source(tmp_path)),
        images["sti-fake-builder"],
        app_tag,
        runtime_image=images["sti-fake"],
        method="run",
    )
    result = client.wait(client.submit_build(request))
    assert result.success, result.messages
    assert [step.name for step in result.steps][-2:] == ["deploy", "tag"]
    assert api.inspect_image(f"{app_tag}-build")
    assert "src/index.html" in run_and_read(api, app_tag, "/sti-fake")


def test_failing_prepare_through_queue_exits_1_with_its_output(
    images: dict[str, str], worker: Worker, broker_url: str, app_tag: str, tmp_path: Path
) -> None:
    done = sti_submit(
        "build",
        str(make_source(tmp_path)),
        images["sti-fake-failing"],
        app_tag,
        "--broker",
        broker_url,
    )
    assert done.returncode == 1
    assert "prepare: about to fail" in done.stderr  # the live log
    assert "exited with code 3" in done.stdout  # the messages
    assert "Build failed [BuildFailed]" in done.stdout


def test_missing_builder_image_through_queue_exits_3(
    worker: Worker, broker_url: str, app_tag: str, tmp_path: Path
) -> None:
    done = sti_submit(
        "build",
        str(make_source(tmp_path)),
        "sti-test/does-not-exist",
        app_tag,
        "--broker",
        broker_url,
        "--json",
    )
    assert done.returncode == 3
    assert json_result(done)["error"]["code"] == "PullImageFailed"


def test_validate_through_queue(images: dict[str, str], worker: Worker, broker_url: str) -> None:
    good = sti_submit("validate", images["sti-fake"], "-I", "--broker", broker_url)
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"Base image {images['sti-fake']} is valid" in good.stdout
    broken = sti_submit("validate", images["sti-fake-broken"], "--broker", broker_url, "--json")
    assert broken.returncode == 1
    assert json_result(broken)["messages"] == [
        f"Base image {images['sti-fake-broken']} failed validation: missing /usr/bin/prepare"
    ]
    extended = sti_submit(
        "validate",
        images["sti-fake-builder"],
        "-R",
        images["sti-fake-broken"],
        "--broker",
        broker_url,
    )
    assert extended.returncode == 1
    assert "Runtime image" in extended.stdout


def test_no_wait_prints_the_build_id_and_status_follows_it(
    images: dict[str, str], worker: Worker, broker_url: str, app_tag: str, tmp_path: Path
) -> None:
    queued = sti_submit(
        "build",
        str(make_source(tmp_path)),
        images["sti-fake"],
        app_tag,
        "--broker",
        broker_url,
        "--no-wait",
    )
    assert queued.returncode == 0
    build_id = queued.stdout.strip().splitlines()[-1]
    deadline = time.monotonic() + 60
    while True:
        status = json_result(sti_submit("status", build_id, "--json", "--broker", broker_url))
        if "schema" in status:
            break
        assert status["build_id"] == build_id
        assert status["state"] in ("PENDING", "STARTED", "PROGRESS", "RETRY")
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status["success"] is True and status["build_id"] == build_id


def test_late_logs_follow_replays_the_whole_log(
    images: dict[str, str], worker: Worker, broker_url: str, app_tag: str, tmp_path: Path
) -> None:
    done = sti_submit(
        "build",
        str(make_source(tmp_path)),
        images["sti-fake"],
        app_tag,
        "--broker",
        broker_url,
        "--json",
    )
    build_id = json_result(done)["build_id"]
    replay = sti_submit("logs", build_id, "--follow", "--broker", broker_url, timeout=30)
    assert replay.returncode == 0
    lines = replay.stdout.splitlines()
    assert lines[0] == f"Build {build_id} claimed by host host-a"
    assert "prepare: building" in lines
    assert lines[-1].startswith(f"Build {build_id} succeeded")


@pytest.mark.parametrize("method", ["build", "run"])
def test_cancel_stops_a_running_build_and_tags_nothing(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    client: StiClient,
    broker_url: str,
    app_tag: str,
    tmp_path: Path,
    method: str,
) -> None:
    request = BuildRequest(
        str(make_source(tmp_path)), images["sti-fake-slow"], app_tag, method=method
    )
    build_id = client.submit_build(request)
    _wait_for_line(client, build_id, "prepare: started")
    cancelled = sti_submit("cancel", build_id, "--broker", broker_url)
    assert cancelled.returncode == 0, cancelled.stderr
    result = client.result(build_id, timeout=20)  # well before prepare's 30 s sleep ends
    assert result.error_code == "Cancelled"
    assert not api.images(name=app_tag)


def test_timeout_cancels_the_build_and_exits_4(
    api: docker.APIClient,
    images: dict[str, str],
    worker: Worker,
    broker_url: str,
    app_tag: str,
    tmp_path: Path,
) -> None:
    done = sti_submit(
        "build",
        str(make_source(tmp_path)),
        images["sti-fake-slow"],
        app_tag,
        "--broker",
        broker_url,
        "--timeout",
        "3",
        "--json",
    )
    assert done.returncode == 4
    assert json_result(done)["error"]["code"] == "TimedOut"
    assert not api.images(name=app_tag)


def test_builds_of_the_same_tag_never_overlap(
    images: dict[str, str], worker: Worker, client: StiClient, app_tag: str, tmp_path: Path
) -> None:
    source = str(make_source(tmp_path))
    requests = [
        BuildRequest(source, images["sti-fake-slow"], app_tag, env={"SLEEP": "2"}) for _ in range(2)
    ]
    build_ids = [client.submit_build(request) for request in requests]
    results = [client.wait(build_id, timeout=90) for build_id in build_ids]
    assert all(result.success for result in results), [r.messages for r in results]
    spans = sorted(_prepare_span(client, build_id) for build_id in build_ids)
    assert spans[0][1] <= spans[1][0], f"prepare runs overlapped: {spans}"
    waited = [line for build_id in build_ids for line in client.follow(build_id, follow=False)]
    assert any(line.startswith("Waiting for build") for line in waited)


def test_workers_lists_the_host_with_its_slots(worker: Worker, broker_url: str) -> None:
    done = sti_submit("workers", "--json", "--broker", broker_url)
    assert done.returncode == 0
    hosts = json_result(done)
    assert {key: hosts[0][key] for key in ("host_id", "slots")} == {"host_id": "host-a", "slots": 2}
    assert hosts[0]["running"] == []  # no build of the session is running now
    assert len(hosts[0]["nodes"]) == 1 and hosts[0]["nodes"][0].startswith("sti-host-a-")


def test_unreachable_broker_is_one_clear_line_and_exit_3(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    done = sti_submit(
        "build", str(make_source(tmp_path)), "acme/builder", "acme/app", "--broker", url
    )
    assert done.returncode == 3
    assert time.monotonic() - started < 15
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert url in done.stderr
    assert "Traceback" not in done.stderr


def _wait_for_line(client: StiClient, build_id: str, prefix: str) -> None:
    for line in client.follow(build_id):
        if line.startswith(prefix):
            return
    raise AssertionError(f"build {build_id} ended before printing {prefix!r}")


def _prepare_span(client: StiClient, build_id: str) -> tuple[float, float]:
    lines = list(client.follow(build_id, follow=False))
    start = next(line for line in lines if line.startswith("prepare: started at "))
    end = next(line for line in lines if line.startswith("prepare: finished at "))
    return float(start.rsplit(" ", 1)[1]), float(end.rsplit(" ", 1)[1])


def test_the_same_request_cannot_be_submitted_twice(
    images: dict[str, str], worker: Worker, client: StiClient, app_tag: str, tmp_path: Path
) -> None:
    request = BuildRequest(str(make_source(tmp_path)), images["sti-fake"], app_tag)
    build_id = client.submit_build(request)
    with pytest.raises(InvalidInput, match="already submitted"):
        client.submit_build(request)
    assert client.wait(build_id).success


def test_logs_of_an_unknown_build_is_a_clear_error(worker: Worker, broker_url: str) -> None:
    done = sti_submit("logs", "0123456789abcdef", "--follow", "--broker", broker_url, timeout=30)
    assert done.returncode == 2
    assert "no build 0123456789abcdef is known" in done.stderr


def test_a_task_naming_a_path_on_the_worker_is_refused(
    worker: Worker, broker_url: str, images: dict[str, str], app_tag: str
) -> None:
    """Only uploads reach a worker's disk: a raw path would build the worker's own files."""
    kwargs = {"source": "/etc", "build_image": images["sti-fake"], "tag": app_tag}
    app = Celery("sender", broker=broker_url, backend=broker_url)
    result = app.send_task("sti.build", kwargs=kwargs, queue="sti.builds").get(timeout=60)
    app.close()
    assert result["error"]["code"] == "InvalidInput"
    assert "STI_ALLOW_LOCAL_SOURCES" in result["error"]["message"]
