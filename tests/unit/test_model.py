"""Requests and results as plain JSON: what one side writes, the other reads back equal; task
arguments from any Celery app are checked for their exact JSON types; build ids are only ever
lowercase uuids (they name work dirs, containers and Redis keys)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from sti.errors import InvalidBuildMethod, InvalidInput
from sti.model import (
    ENV_MAX_BYTES,
    ENV_MAX_VARIABLES,
    BuildRequest,
    Result,
    Step,
    ValidateRequest,
    check_build_id,
    from_task_arguments,
    validate_env,
)


def through_json(data: dict[str, Any]) -> dict[str, Any]:
    """What the other side of the queue reads: the JSON text of data, parsed again."""
    return json.loads(json.dumps(data))


def test_a_build_request_with_every_field_set_round_trips() -> None:
    request = BuildRequest(
        source="https://git.example/app.git",
        build_image="registry.example:5000/builders/python:3.12",
        tag="registry.example:5000/apps/web:v1",
        clean=True,
        env={"A": "1", "B": "x,y=z", "EMPTY": ""},
        runtime_image="registry.example:5000/runtimes/python",
        method="run",
        ref="main",
        context_dir="web",
        ignore_submodules=True,
        push=True,
        exclude=("*.log", "tmp/"),
    )
    data = through_json(request.to_json())
    assert data["exclude"] == ["*.log", "tmp/"]
    assert data["env"] == {"A": "1", "B": "x,y=z", "EMPTY": ""}
    assert BuildRequest.from_json(data) == request


def test_a_build_request_with_defaults_round_trips_keeping_its_build_id() -> None:
    request = BuildRequest("/src", "acme/builder", "acme/app")
    again = BuildRequest.from_json(through_json(request.to_json()))
    assert again == request
    assert again.build_id == request.build_id


def test_a_validate_request_round_trips() -> None:
    request = ValidateRequest("acme/builder", incremental=True, runtime_image="acme/runtime")
    assert ValidateRequest.from_json(through_json(request.to_json())) == request


def test_a_build_result_round_trips() -> None:
    result = Result(
        kind="build",
        build_id=uuid.uuid4().hex,
        success=True,
        messages=("Tagged image 0123456789ab as acme/app",),
        tag="acme/app",
        image_id="sha256:" + "0" * 64,
        incremental=True,
        method="build",
        runtime_image="acme/runtime",
        revision="f" * 40,
        digest="sha256:" + "1" * 64,
        host="host-a",
        duration_s=12.5,
        steps=(Step("fetch_source", 0.25), Step("build", 10.125)),
    )
    data = through_json(result.to_json())
    assert data["schema"] == "sti.result/1"
    assert data["steps"] == [
        {"name": "fetch_source", "duration_s": 0.25},
        {"name": "build", "duration_s": 10.125},
    ]
    assert Result.from_json(data) == result


def test_a_failed_validate_result_round_trips_without_build_fields() -> None:
    result = Result(
        kind="validate",
        build_id=uuid.uuid4().hex,
        success=False,
        messages=("Base image acme/builder failed validation: missing /usr/bin/prepare",),
        error={"code": "InvalidImage", "message": "missing /usr/bin/prepare"},
        host="host-a",
        duration_s=0.5,
    )
    data = through_json(result.to_json())
    assert "tag" not in data and "image_id" not in data
    again = Result.from_json(data)
    assert again == result
    assert again.error_code == "InvalidImage"


def test_a_result_ignores_fields_it_does_not_know() -> None:
    data = Result(kind="validate", build_id=uuid.uuid4().hex, success=True).to_json()
    assert Result.from_json({**data, "added_later": 1}).success


def test_from_json_refuses_unknown_and_missing_fields() -> None:
    data = BuildRequest("/src", "acme/builder", "acme/app").to_json()
    with pytest.raises(InvalidInput, match="unknown BuildRequest field"):
        BuildRequest.from_json({**data, "colour": "blue"})
    del data["tag"]
    with pytest.raises(InvalidInput, match="BuildRequest needs tag"):
        BuildRequest.from_json(data)


# task arguments sent by other Celery apps

TASK_ID = str(uuid.uuid4())


def test_task_arguments_become_a_request_whose_build_id_is_the_task_id() -> None:
    kwargs = {"source": "/src", "build_image": "acme/builder", "tag": "acme/app"}
    request = from_task_arguments(BuildRequest, (), kwargs, TASK_ID)
    assert request == BuildRequest("/src", "acme/builder", "acme/app", build_id=TASK_ID)


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        (("/src",), {"build_image": "acme/builder", "tag": "acme/app"}, "keyword arguments only"),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "build_id": TASK_ID},
            "build_id is not an argument",
        ),
        ((), {"source": "/src", "build_image": "acme/builder"}, "needs tag"),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "colour": "blue"},
            "unknown BuildRequest field",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "clean": "false"},
            "clean must be true or false",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "push": 1},
            "push must be true or false",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "exclude": "*.log"},
            "exclude must be a list of strings",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "exclude": ["a", 7]},
            "exclude must be a list of strings",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "env": [["A", "1"]]},
            "env must be an object",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "env": {"A": 1}},
            "must have a string value",
        ),
        (
            (),
            {"source": {"path": "/"}, "build_image": "acme/b", "tag": "acme/app"},
            "source must be a string",
        ),
        ((), {"source": "/src", "build_image": "acme/b", "tag": None}, "tag must be a string"),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "ref": ["main"]},
            "ref must be a string or null",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "labels": ["a=b"]},
            "labels must be an object",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "labels": {"a": 1}},
            "label a must have a string value",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "labels": {"a=b": ""}},
            "label name 'a=b' is invalid",
        ),
        (
            (),
            {
                "source": "/src",
                "build_image": "acme/b",
                "tag": "acme/app",
                "labels": {"io.sti.build-id": "0" * 32},
            },
            "label io.sti.build-id is sti's own",
        ),
        (
            (),
            {
                "source": "/src",
                "build_image": "acme/b",
                "tag": "acme/app",
                "labels": {f"l{i}": "" for i in range(101)},
            },
            "101 labels given; at most 100",
        ),
        (
            (),
            {
                "source": "/src",
                "build_image": "acme/b",
                "tag": "acme/app",
                "labels": {"a": "x" * 70000},
            },
            "the labels given take 70001 bytes",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "description": 5},
            "description must be a string or null",
        ),
        (
            (),
            {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "display_name": "a\x00"},
            "display_name must be at most 4096 characters, without NUL",
        ),
    ],
)
def test_task_arguments_of_the_wrong_shape_or_type_are_refused(
    args: tuple[Any, ...], kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidInput, match=named):
        from_task_arguments(BuildRequest, args, kwargs, TASK_ID)


def test_an_unknown_method_is_its_own_error() -> None:
    kwargs = {"source": "/src", "build_image": "acme/b", "tag": "acme/app", "method": "kaniko"}
    with pytest.raises(InvalidBuildMethod, match="kaniko"):
        from_task_arguments(BuildRequest, (), kwargs, TASK_ID)


def test_validate_task_arguments_are_type_checked_too() -> None:
    request = from_task_arguments(ValidateRequest, (), {"build_image": "acme/b"}, TASK_ID)
    assert request.build_id == TASK_ID and request.incremental is False
    with pytest.raises(InvalidInput, match="incremental must be true or false"):
        from_task_arguments(
            ValidateRequest, (), {"build_image": "acme/b", "incremental": "yes"}, TASK_ID
        )


def test_a_task_id_that_is_not_a_build_id_is_refused() -> None:
    kwargs = {"source": "/src", "build_image": "acme/builder", "tag": "acme/app"}
    with pytest.raises(InvalidInput, match="is not a lowercase uuid"):
        from_task_arguments(BuildRequest, (), kwargs, "../../tmp")


# build ids


@pytest.mark.parametrize("build_id", [uuid.uuid4().hex, str(uuid.uuid4()), "0" * 32])
def test_lowercase_uuids_with_or_without_dashes_are_build_ids(build_id: str) -> None:
    assert check_build_id(build_id) == build_id


@pytest.mark.parametrize(
    "build_id",
    [
        uuid.uuid4().hex.upper(),
        str(uuid.uuid4()).upper(),
        "../" + "0" * 29,
        "0" * 31 + "/",
        "0" * 32 + "\n",
        "\n" + "0" * 32,
        "0" * 31,
        "0" * 33,
        "0" * 31 + "g",
        "{" + str(uuid.uuid4()) + "}",
        uuid.uuid4().hex[:8] + "-" + uuid.uuid4().hex[:24],
        "",
        ".*",
        None,
        7,
        ["0" * 32],
    ],
)
def test_anything_else_is_refused_as_a_build_id(build_id: object) -> None:
    with pytest.raises(InvalidInput, match="is not a lowercase uuid"):
        check_build_id(build_id)


def test_environment_variables_are_limited_in_number_and_size() -> None:
    assert len(validate_env({f"V{n}": "x" for n in range(ENV_MAX_VARIABLES)})) == ENV_MAX_VARIABLES
    with pytest.raises(InvalidInput, match="at most 256 are allowed"):
        validate_env({f"V{n}": "x" for n in range(ENV_MAX_VARIABLES + 1)})
    assert validate_env({"BIG": "x" * (ENV_MAX_BYTES - 3)})
    with pytest.raises(InvalidInput, match="at most 131072"):
        validate_env({"BIG": "x" * (ENV_MAX_BYTES - 2)})


def test_a_build_message_carries_only_what_differs_from_the_defaults() -> None:
    """A worker that predates an option still takes a build that does not use it."""
    plain = BuildRequest("/src", "acme/builder", "acme/app", build_id=TASK_ID)
    assert plain.task_keywords() == {
        "source": "/src",
        "build_image": "acme/builder",
        "tag": "acme/app",
    }
    given = BuildRequest(
        "/src", "acme/builder", "acme/app", clean=True, env={"A": "1"}, pull_policy="never"
    )
    keywords = given.task_keywords()
    assert keywords == {
        "source": "/src",
        "build_image": "acme/builder",
        "tag": "acme/app",
        "clean": True,
        "env": {"A": "1"},
        "pull_policy": "never",
    }
    assert from_task_arguments(BuildRequest, (), keywords, TASK_ID).to_json() == {
        **given.to_json(),
        "build_id": TASK_ID,
    }
