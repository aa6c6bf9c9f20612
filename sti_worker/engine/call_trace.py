"""Every Engine API call a worker makes, logged with its milliseconds (STI_TRACE_ENGINE_CALLS):
what a build's timeline is made of, for finding round trips to cut.

A call is logged when the engine's response headers arrive: its "ms" is the time from sending
the request until then (a streamed body, a container's output or a build's events, comes after),
so it began "ms" before the line's timestamp.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import docker
import requests
import structlog

_log = structlog.get_logger("sti.engine_calls")


def trace_calls(api: docker.APIClient) -> None:
    """Log each of api's calls from now on (the path without its query: names and filters in
    it are no timeline's business)."""
    api.hooks["response"].append(_logged)


def _logged(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    request = response.request
    _log.info(
        "engine call",
        method=request.method,
        path=urlsplit(request.url or "").path,
        status=response.status_code,
        ms=round(response.elapsed.total_seconds() * 1000, 1),
    )
    return response
