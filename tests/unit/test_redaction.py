"""Credentials in URLs are masked wherever sti prints or stores text."""

from __future__ import annotations

import pytest

from sti.model import Result
from sti.redaction import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:s3cret@git.example/app.git", "https://***@git.example/app.git"),
        ("https://ghp_token@git.example/app.git", "https://***@git.example/app.git"),
        ("fatal: 'ssh://git:pw@host:22/r' not found", "fatal: 'ssh://***@host:22/r' not found"),
        ("http://a:b@x/ then http://c:d@y/", "http://***@x/ then http://***@y/"),
        ("http://A\\@B/", "http://***@B/"),
        ("http://u:p%40ss@host/a.tgz?x=1", "http://***@host/a.tgz?x=1"),
        # the host is after the last "@" for git, ssh and curl: all before it is masked
        ("https://u:p@ss@host/x", "https://***@host/x"),
        ("ssh://u:tok#x@host/r", "ssh://***@host/r"),
        ("https://u:tok?x@host/r", "https://***@host/r"),
        ("x_https://u:tok@host/", "x_https://***@host/"),  # whatever comes before the scheme
        ("1https://u:tok@host/", "1https://***@host/"),
        (
            '{"url": "https://u:tok@host", "mail": "a@b"}',
            '{"url": "https://***@host", "mail": "a@b"}',
        ),
        ("<https://u:tok@host>", "<https://***@host>"),
    ],
)
def test_the_userinfo_of_every_url_is_masked(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "git@github.com:org/app.git",  # scp-like: the user is not a secret
        "https://git.example/app.git",
        "mail me at dev@example.org",
        "https://git.example/a@b",  # an @ in the path is not userinfo
    ],
)
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_a_result_never_carries_credentials() -> None:
    result = Result(
        kind="build",
        build_id="0" * 32,
        success=False,
        messages=("Source https://u:tok@git.example/app.git at commit abc",),
        error={"code": "SourceFetchFailed", "message": "cannot fetch https://u:tok@git.example/"},
    )
    text = str(result.to_json())
    assert "tok" not in text
    assert "https://***@git.example/app.git" in text
