"""Anyone who can reach Redis can send any task, internal ones included: a worker acts on nothing
in a message it did not write. Each case is sent by name from a Celery app of the attacker's."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from celery import Celery

from sti_worker.settings import host_queue
from tests.services import Worker


@pytest.fixture
def attacker(broker_url: str) -> Iterator[Celery]:
    app = Celery("attacker", broker=broker_url, backend=broker_url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    yield app
    app.close()


def _refusal(app: Celery, name: str, queue: str, *args: Any, **kwargs: Any) -> str:
    """Send the task; it must fail without doing anything. Returns the error's type name."""
    sent = app.send_task(name, args=args, kwargs=kwargs, queue=queue)
    sent.get(timeout=60, propagate=False)
    assert sent.state == "FAILURE", sent.result
    return type(sent.result).__name__


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("not the worker's to delete\n")
    return victim


def _forged_state(source_dir: Path, tag: str, builder: str, **extra: Any) -> dict[str, Any]:
    """A build state as sti.build writes it, with the paths and images an attacker wants."""
    request = {"source": str(source_dir), "build_image": builder, "tag": tag}
    request["build_id"] = uuid.uuid4().hex
    return {"request": request, "host": "host-a", "source_dir": str(source_dir), **extra}


@pytest.mark.parametrize(
    "build_id", ["x/../..{victim}", "../../../..{victim}", ".*", "", "A" * 32, None, 7]
)
def test_abort_refuses_a_build_id_it_did_not_make(
    attacker: Celery, worker: Worker, tmp_path: Path, build_id: object, app_tag: str
) -> None:
    victim = _victim(tmp_path)
    if isinstance(build_id, str):
        build_id = build_id.format(victim=victim)
    # the work dir of an earlier build named "x", for the path to go through
    stepping_stone = Path(tempfile.gettempdir(), "sti-x")
    stepping_stone.mkdir(exist_ok=True)
    try:
        error = _refusal(attacker, "sti.abort", "sti.builds", build_id=build_id, tag=app_tag)
    finally:
        stepping_stone.rmdir()
    assert error == "InvalidInput"
    assert (victim / "keep.txt").exists()


@pytest.mark.parametrize("tag", ["../x", "sti-test/app:" + "t" * 200, "Upper/case", ""])
def test_abort_refuses_a_tag_that_is_not_one(attacker: Celery, worker: Worker, tag: str) -> None:
    error = _refusal(attacker, "sti.abort", "sti.builds", build_id=uuid.uuid4().hex, tag=tag)
    assert error == "InvalidInput"


def _forgeries(state: dict[str, Any]) -> list[object]:
    body = json.dumps(state, sort_keys=True, separators=(",", ":"))
    other_host = hmac.new(secrets.token_bytes(32), body.encode(), hashlib.sha256).hexdigest()
    return [
        state,
        {"state": body, "seal": other_host},
        {"state": body, "seal": "0" * 64},
        {"state": body, "seal": other_host, "extra": 1},
        {"state": body, "seal": None},
        {"state": state, "seal": other_host},
        "a string",
        None,
    ]


def test_a_step_refuses_a_state_its_host_did_not_seal(
    attacker: Celery,
    worker: Worker,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    victim = _victim(tmp_path)
    state = _forged_state(victim, app_tag, images["sti-fake"])
    queue = host_queue(worker.host_id)
    for forged in _forgeries(state):
        for step in ("fetch_source", "build"):
            error = _refusal(attacker, "sti.step", queue, forged, step=step)
            assert error == "ForgedState", (forged, step)
    assert api.images(name=app_tag) == []
    assert (victim / "keep.txt").exists()


def test_finish_refuses_a_state_its_host_did_not_seal(
    attacker: Celery,
    worker: Worker,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """A forged final state would have the worker remove images it never made."""
    bystander = api.inspect_image(images["sti-fake-no-save"])["Id"]
    state = _forged_state(tmp_path, app_tag, images["sti-fake"], replaced_images=[bystander])
    state["error"] = {"code": "BuildFailed", "message": "forged"}
    for forged in _forgeries(state):
        error = _refusal(attacker, "sti.finish", host_queue(worker.host_id), forged)
        assert error == "ForgedState", forged
    assert api.inspect_image(bystander)["Id"] == bystander
