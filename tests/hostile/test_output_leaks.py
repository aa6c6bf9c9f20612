"""What sti prints or stores never shows a URL's credentials or more than its caps, whatever the
shape of the text: a userinfo of any characters, a line a lone surrogate cannot be stored as, a
worker log line carrying an exception or an object, an error message of megabytes."""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Iterator

import pytest
import redis
import structlog

from sti import keys
from sti.errors import BuildFailed, InvalidInput
from sti.lines import TEXT_MAX_BYTES, cut_line, utf8_size
from sti.model import BuildRequest, Result
from sti.redaction import redact
from sti_worker.buildlog import BuildLog
from tests.test_logs import logging_to

# characters RFC 3986 lets a userinfo hold as they are (sub-delims), and some git and WHATWG
# readers take there too: the old masker ended the authority at a quote, "<", ">" or "`"
PASSWORDS = ["it's", "a(b)c", "x!$&*+,;=y", 'pa"ss', "a<b>c", "a`b", "p'(x)'"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_userinfo_is_masked_whatever_characters_it_holds(password: str) -> None:
    url = f"https://user:{password}@git.example/app.git"
    for shown in (url, f"'{url}'", f'"{url}"', f"({url})", f"<{url}>", f"fatal: {url!r} failed"):
        masked = redact(shown)
        assert password not in masked, shown
        assert "https://***@git.example/app.git" in masked, shown


def test_a_refused_scripts_url_never_shows_its_password_in_the_result() -> None:
    """A raw sti.build message naming --scripts-url https://user:it's@host/...: the refusal
    quotes the URL (repr() writes it in double quotes), the result went to Redis with it."""
    with pytest.raises(InvalidInput) as refused:
        BuildRequest(
            "https://git.example/app.git",
            "acme/builder",
            "acme/app",
            scripts_url="https://ci:it's-a-secret@git.example/scripts.tgz",
        )
    result = Result.from_error("build", uuid.uuid4().hex, refused.value).to_json()
    assert "it's-a-secret" not in str(result)
    assert "https://***@git.example/scripts.tgz" in result["error"]["message"]


@pytest.mark.parametrize(
    "text",
    [
        "git@github.com:org/app.git",
        "mail me at dev@example.org",
        "https://git.example/a@b",
        "see https://git.example/x, then mail dev@example.org",
    ],
)
def test_text_without_credentials_is_still_left_alone(text: str) -> None:
    assert redact(text) == text


# lines held to their cap, masks included


def test_a_cut_line_stays_within_its_cap_after_masking() -> None:
    """Each mask ("***") can be longer than the userinfo it hides: a cut line of many short
    URLs came out 17% over its cap."""
    line = "https://a@h " * 10_000
    for cap in (256, 1024, 16 * 1024):
        held = cut_line(line, cap)
        assert utf8_size(held) <= cap
        assert held.endswith(f"… [line cut at {cap} bytes]")
        assert "https://a@" not in held


# the build log


@pytest.fixture
def redis_client(broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_url, decode_responses=True)
    yield client
    client.close()


def test_a_line_that_is_not_utf8_text_is_logged_and_the_log_goes_on(
    redis_client: redis.Redis,
) -> None:
    """A lone surrogate (a raw message's ref, a file name read with surrogateescape) cannot be
    encoded for Redis: the write raised, and every later line of the build with it (the line
    stayed pending)."""
    build_id = uuid.uuid4().hex
    log = BuildLog(redis_client, build_id, max_lines=100, expires_s=60)
    log.write("checking out ref main\udcff")
    log.write("the next line")
    log.end()
    entries = redis_client.xrange(keys.log_stream(build_id))
    lines = [fields[keys.LINE_FIELD] for _, fields in entries if keys.LINE_FIELD in fields]
    assert lines == ["checking out ref main\\udcff", "the next line"]


# the worker's own log


@pytest.fixture(params=["console", "json"])
def worker_log(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    with logging_to(request.param) as written:
        yield written


SECRET_URL = "https://ci:s3cret-token@git.example/app.git"


def test_an_exception_celery_logs_is_masked_and_cut(worker_log: io.StringIO) -> None:
    """Celery logs a failed task through the standard library with exc_info; on a terminal
    (console) its traceback went out whole, credentials and megabytes included."""
    try:
        raise RuntimeError(f"cannot fetch {SECRET_URL}: " + "x" * 1_000_000)
    except RuntimeError:
        logging.getLogger("celery.app.trace").error("Task failed", exc_info=True)
    written = worker_log.getvalue()
    assert "s3cret-token" not in written
    assert "https://***@git.example/app.git" in written
    assert len(written.encode()) < 2 * TEXT_MAX_BYTES


def test_a_field_that_is_not_text_is_masked_and_cut(worker_log: io.StringIO) -> None:
    """An object or a list as a field was rendered with repr() after the masking, whole."""

    class Remote:
        def __repr__(self) -> str:
            return f"Remote({SECRET_URL} {'y' * 1_000_000})"

    structlog.stdlib.get_logger("sti").warning(
        "fetch failed", remote=Remote(), urls=[SECRET_URL], error=ValueError(SECRET_URL)
    )
    written = worker_log.getvalue()
    assert "s3cret-token" not in written
    assert written.count("https://***@git.example/app.git") == 3
    assert len(written.encode()) < 2 * TEXT_MAX_BYTES


# errors and results


def test_an_error_message_of_megabytes_is_cut() -> None:
    """An error quotes what it was given (an image's label, the engine's answer): a megabyte
    went whole into the result in Redis, the chain's task messages and the worker's log."""
    error = BuildFailed(
        f"docker build failed: {SECRET_URL} " + "e" * 5_000_000,
        details=["last output lines:", "d" * 5_000_000],
    )
    assert utf8_size(error.message) <= TEXT_MAX_BYTES
    assert error.message.endswith(f"… [line cut at {TEXT_MAX_BYTES} bytes]")
    assert all(utf8_size(line) <= TEXT_MAX_BYTES for line in error.details)
    result = Result.from_error("build", uuid.uuid4().hex, error).to_json()
    assert len(str(result)) < 4 * TEXT_MAX_BYTES
    assert "s3cret-token" not in str(result)


def test_a_result_holds_each_message_to_the_cap() -> None:
    """A result read back from Redis (anyone there can write one) is held as one made here."""
    stored = {
        "kind": "build",
        "build_id": uuid.uuid4().hex,
        "success": False,
        "messages": ["m" * 3_000_000, SECRET_URL],
        "error": {"code": "BuildFailed", "message": "e" * 3_000_000},
    }
    result = Result.from_json(stored)
    assert [utf8_size(m) <= TEXT_MAX_BYTES for m in result.messages] == [True, True]
    assert result.error and utf8_size(result.error["message"]) <= TEXT_MAX_BYTES
    assert re.fullmatch(r"m+… \[line cut at \d+ bytes\]", result.messages[0])
    assert result.messages[1] == "https://***@git.example/app.git"
