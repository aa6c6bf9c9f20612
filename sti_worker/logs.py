"""structlog configuration: one call per process, JSON in production, readable in a terminal.

Standard-library loggers (Celery, docker-py, urllib3) go through the same renderer, so every line
carries the bound context (build_id, task_id, host) the same way.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

from sti.lines import TEXT_MAX_BYTES, shown_line

# values a renderer writes as they are; anything else it would write with repr()
_PLAIN = (bool, int, float, type(None))
_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _redact_credentials(
    logger: object, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Every text of a log line (the event, the fields, a traceback, an object as repr() shows
    it) held to TEXT_MAX_BYTES and without URL credentials: they can carry a build's output."""
    return {
        name: value
        if isinstance(value, _PLAIN)
        else shown_line(value if isinstance(value, str) else repr(value), TEXT_MAX_BYTES)
        for name, value in event.items()
    }


def log_format(stream: object = sys.stderr) -> str:
    """STI_LOG_FORMAT if set, else console on a terminal and json otherwise."""
    chosen = os.environ.get("STI_LOG_FORMAT", "").strip().lower()
    if chosen in ("console", "json"):
        return chosen
    return "console" if getattr(stream, "isatty", lambda: False)() else "json"


def configure_logging(level: str | int = "INFO", fmt: str | None = None) -> None:
    fmt = fmt or log_format()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        # plain: rich's formatter (when installed) prints every frame's locals, build_env included
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED_PROCESSORS,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                # a stdlib record's exc_info (Celery's errors) as text, in both formats: a
                # traceback the console renderer formats itself would pass unmasked and whole
                structlog.processors.format_exc_info,
                _redact_credentials,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    for noisy in ("urllib3", "docker", "git"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
