"""A build host's housekeeping on a thread of its own, off the task slots.

Trimming the engine's build cache can take seconds to tens of seconds of disk on a busy host
(BuildKit sizes every record it has not sized yet before it deletes the oldest): run in a
task, it would hold that task's slot, and the next build would wait for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from .engine.docker_host import DockerHost
from .engine.pipeline import trim_build_cache

_log = structlog.stdlib.get_logger(__name__)
_running_lock = threading.Lock()
_running: threading.Thread | None = None


def trim_in_background(engine: Callable[[], DockerHost | None]) -> threading.Thread | None:
    """Start trimming the build cache unless this process is trimming it already; the thread,
    if one was started."""
    global _running
    with _running_lock:
        if _running is not None and _running.is_alive():
            return None
        _running = threading.Thread(
            target=_trim, args=(engine,), name="sti-trim-build-cache", daemon=True
        )
        _running.start()
        return _running


def _trim(engine: Callable[[], DockerHost | None]) -> None:
    try:
        trim_build_cache(engine(), _log.warning)
    except Exception:  # housekeeping: never the end of a worker
        _log.exception("trimming the build cache failed")
