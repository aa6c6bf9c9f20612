"""Worker logs: every line JSON in production, exceptions with their traceback as text."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from sti_worker.logs import configure_logging


@contextlib.contextmanager
def logging_to(fmt: str) -> Iterator[io.StringIO]:
    """The worker's logging set up in fmt ("json" or "console"), its one handler writing
    here; as it was again on leaving."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", fmt)
    written = io.StringIO()
    assert isinstance(root.handlers[0], logging.StreamHandler)
    root.handlers[0].setStream(written)
    try:
        yield written
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()


@pytest.fixture
def json_logging() -> Iterator[io.StringIO]:
    with logging_to("json") as written:
        yield written


def _lines(written: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in written.getvalue().splitlines()]


def _fail() -> None:
    raise ValueError("the step broke")


def test_a_standard_library_logger_error_carries_its_traceback_as_text(
    json_logging: io.StringIO,
) -> None:
    """Celery logs through the standard library with exc_info: the traceback must survive."""
    try:
        _fail()
    except ValueError:
        logging.getLogger("celery.app.trace").error("Task failed", exc_info=True)
    [line] = _lines(json_logging)
    assert line["event"] == "Task failed"
    assert "Traceback (most recent call last)" in str(line["exception"])
    assert "ValueError: the step broke" in str(line["exception"])
    assert "in _fail" in str(line["exception"])
    assert "exc_info" not in line


def test_a_structlog_error_carries_its_traceback_as_text(
    json_logging: io.StringIO,
) -> None:
    try:
        _fail()
    except ValueError:
        structlog.stdlib.get_logger("sti").exception("step failed", build_id="b")
    [line] = _lines(json_logging)
    assert line["build_id"] == "b"
    assert "ValueError: the step broke" in str(line["exception"])


def test_a_huge_field_is_cut_and_masked(json_logging: io.StringIO) -> None:
    """A worker's own log line can carry a build's output (an error message, a traceback):
    each text is held to 64 KiB before it is masked."""
    url = "https://ci:" + "s" * 1_000_000 + "@git.example/app.git"
    structlog.stdlib.get_logger("sti").error(f"fetching {url} failed", source=url)
    [line] = _lines(json_logging)
    for text in (str(line["event"]), str(line["source"])):
        assert len(text.encode()) <= 64 * 1024
        assert text.endswith("… [line cut at 65536 bytes]")
        assert "https://***" in text and "ssss" not in text
