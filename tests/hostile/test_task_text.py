"""Text in a task message that UTF-8 cannot carry: JSON spells a lone surrogate ("\\udcff"), and
Python decodes it into a str that the engine, Redis and every log refuse to encode. Each field of
a request refuses it by name, so the build ends with a result object (InvalidInput), never as a
Celery failure without one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sti.errors import InvalidInput
from sti.model import BuildRequest, UsageRequest, ValidateRequest, from_task_arguments

LONE = "\udcff"
BUILD = {"source": "https://git.example/app.git", "build_image": "acme/builder", "tag": "acme/app"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("labels", {"org.example.note": f"a{LONE}b"}),
        ("labels", {f"org.example.{LONE}": "v"}),
        ("ref", f"main{LONE}"),
        ("context_dir", f"app{LONE}"),
        ("exclude", ["*.log", f"x{LONE}"]),
        ("display_name", f"app{LONE}"),
        ("description", f"an app{LONE}"),
        ("env", {"GREETING": f"hi{LONE}"}),
        ("source", f"https://git.example/app{LONE}.git"),
    ],
)
def test_a_lone_surrogate_in_a_build_field_is_refused_by_name(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        from_task_arguments(BuildRequest, (), {**BUILD, field: value}, str(uuid.uuid4()))
    message = refused.value.message
    message.encode()  # the refusal itself can be stored and logged
    assert field in message or "environment variable" in message


@pytest.mark.parametrize(
    ("kind", "arguments"),
    [
        (ValidateRequest, {"build_image": f"acme/builder{LONE}"}),
        (UsageRequest, {"build_image": "acme/builder", "scripts_url": f"image:///s{LONE}"}),
    ],
)
def test_a_lone_surrogate_in_validate_or_usage_is_refused(
    kind: type, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInput) as refused:
        from_task_arguments(kind, (), arguments, str(uuid.uuid4()))
    refused.value.message.encode()


def test_text_beyond_ascii_is_still_taken() -> None:
    request = from_task_arguments(
        BuildRequest,
        (),
        {**BUILD, "labels": {"org.example.note": "café ☕"}, "description": "naïve"},
        str(uuid.uuid4()),
    )
    assert request.labels == {"org.example.note": "café ☕"}
