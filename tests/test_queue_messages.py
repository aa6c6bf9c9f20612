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

from sti.model import BuildRequest
from sti.wire import host_queue
from sti_worker.engine.pipeline import BuildState
from sti_worker.state_seal import seal
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


@pytest.mark.parametrize(
    ("task", "step", "finish"),
    [
        ("sti.step", "fetch_source", False),
        ("sti.step", "build", False),
        ("sti.step", "tag", True),
        ("sti.finish", None, False),
    ],
)
def test_an_internal_task_refuses_a_state_its_host_did_not_seal(
    attacker: Celery,
    worker: Worker,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    task: str,
    step: str | None,
    finish: bool,
) -> None:
    """A forged state would have a step pack the worker's own files into an image, or the
    final cleanup (sti.finish, or the last step's) remove images the build never made."""
    victim = _victim(tmp_path)
    bystander = api.inspect_image(images["sti-fake-no-save"])["Id"]
    state = _forged_state(victim, app_tag, images["sti-fake"], replaced_images=[bystander])
    if task == "sti.finish" or finish:
        state["error"] = {"code": "BuildFailed", "message": "forged"}
    options: dict[str, Any] = {"steps": [step]} if step else {}
    if finish:
        options["finish"] = True
    for forged in _forgeries(state):
        error = _refusal(attacker, task, host_queue(worker.host_id), forged, **options)
        assert error == "ForgedState", forged
    assert api.images(name=app_tag) == []
    assert (victim / "keep.txt").exists()
    assert api.inspect_image(bystander)["Id"] == bystander


@pytest.mark.parametrize(
    "steps", [["nope"], "build", [], ["tag", "rm -rf /"], [None], {"0": "tag"}]
)
def test_a_sealed_state_replayed_with_steps_of_the_senders_choice_is_refused(
    attacker: Celery, worker: Worker, images: dict[str, str], app_tag: str, steps: object
) -> None:
    """A sealed state copied off the queue is genuine; the steps sent with it are not sealed."""
    request = BuildRequest("https://git.example/app.git", images["sti-fake"], app_tag)
    sealed = seal(BuildState(request=request, host=worker.host_id).to_json())
    error = _refusal(attacker, "sti.step", host_queue(worker.host_id), sealed, steps=steps)
    assert error == "InvalidInput"


@pytest.mark.parametrize("finish", ["true", 1, None, ["yes"]])
def test_a_sealed_state_replayed_with_a_finish_that_is_not_a_boolean_is_refused(
    attacker: Celery, worker: Worker, images: dict[str, str], app_tag: str, finish: object
) -> None:
    request = BuildRequest("https://git.example/app.git", images["sti-fake"], app_tag)
    sealed = seal(BuildState(request=request, host=worker.host_id).to_json())
    queue = host_queue(worker.host_id)
    error = _refusal(attacker, "sti.step", queue, sealed, steps=["tag"], finish=finish)
    assert error == "InvalidInput"


# task arguments from other apps: every refusal is a result object


def _build_kwargs(images: dict[str, str], app_tag: str, **changes: Any) -> dict[str, Any]:
    kwargs = {"source": "https://git.example/app.git", "build_image": images["sti-fake"]}
    return {**kwargs, "tag": app_tag, **changes}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"clean": "false"}, "clean must be true or false"),
        ({"clean": 0}, "clean must be true or false"),
        ({"push": "yes"}, "push must be true or false"),
        ({"ignore_submodules": 1}, "ignore_submodules must be true or false"),
        ({"exclude": "*.log"}, "exclude must be a list of strings"),
        ({"exclude": ["ok", 7]}, "exclude must be a list of strings"),
        ({"env": [["A", "b"]]}, "env must be an object"),
        ({"env": {"A": 1}}, "environment variable A must have a string value"),
        ({"ref": "main\n"}, "is not a valid git branch, tag or commit"),
        ({"ref": ["main"]}, "ref must be a string or null"),
        ({"method": None}, "method must be a string"),
        ({"tag": 42}, "tag must be a string"),
        ({"source": {"path": "/"}}, "source must be a string"),
        ({"colour": "blue"}, "unknown BuildRequest field(s): colour"),
        ({"build_id": uuid.uuid4().hex}, "build_id is not an argument"),
        ({"tag": None}, "tag must be a string"),
        ({"env": {"BIG": "x" * 10_000_000}}, "at most 131072"),
        ({"env": {f"V{n}": "x" for n in range(2000)}}, "at most 256 are allowed"),
    ],
)
def test_a_build_with_arguments_of_the_wrong_kind_gets_an_invalid_input_result(
    attacker: Celery,
    worker: Worker,
    images: dict[str, str],
    app_tag: str,
    changes: dict[str, Any],
    named: str,
) -> None:
    kwargs = _build_kwargs(images, app_tag, **changes)
    result = attacker.send_task("sti.build", kwargs=kwargs, queue="sti.builds").get(timeout=60)
    assert result["schema"] == "sti.result/1"
    assert result["success"] is False
    assert result["error"]["code"] == "InvalidInput"
    assert named in result["error"]["message"]


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((), {"source": "x", "build_image": "sti-test/sti-fake"}, "needs tag"),
        (("x", "sti-test/sti-fake", "sti-test/app"), {}, "keyword arguments only"),
    ],
)
def test_a_build_missing_arguments_gets_an_invalid_input_result(
    attacker: Celery, worker: Worker, args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    sent = attacker.send_task("sti.build", args=args, kwargs=kwargs, queue="sti.builds")
    result = sent.get(timeout=60)
    assert result["error"]["code"] == "InvalidInput"
    assert named in result["error"]["message"]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"build_image": "sti-test/sti-fake", "incremental": "yes"}, "incremental must be"),
        ({"build_image": "sti-test/sti-fake", "runtime": "x"}, "unknown ValidateRequest"),
        ({}, "needs build_image"),
    ],
)
def test_a_validate_with_bad_arguments_gets_an_invalid_input_result(
    attacker: Celery, worker: Worker, kwargs: dict[str, Any], named: str
) -> None:
    result = attacker.send_task("sti.validate", kwargs=kwargs, queue="sti.builds").get(timeout=60)
    assert result["kind"] == "validate"
    assert result["error"]["code"] == "InvalidInput"
    assert named in result["error"]["message"]


def test_null_env_and_exclude_mean_none_given(
    attacker: Celery, worker: Worker, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """A null is "not given" for env and exclude (the defaults), not a refusal."""
    kwargs = _build_kwargs(images, app_tag, env=None, exclude=None, source=str(tmp_path))
    result = attacker.send_task("sti.build", kwargs=kwargs, queue="sti.builds").get(timeout=60)
    # a local path on the worker is refused by the source policy, after the arguments passed
    assert result["error"]["code"] == "InvalidInput"
    assert "local" in result["error"]["message"].lower()
