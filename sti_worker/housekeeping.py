"""A build host's housekeeping on threads of their own, off the task slots.

Trimming the engine's build cache can take seconds to tens of seconds of disk on a busy host
(BuildKit sizes every record it has not sized yet before it deletes the oldest), and removing an
older source image deletes a layer of the size of a source: run in a task, either would hold
that task's slot, and the next build (or the build that made a new source image) would wait.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from .engine.docker_host import DockerHost
from .engine.pipeline import forget_older_source_images, trim_build_cache

_log = structlog.stdlib.get_logger(__name__)
_running_lock = threading.Lock()
_running: dict[str, threading.Thread] = {}

Engine = Callable[[], DockerHost | None]


def trim_in_background(engine: Engine) -> threading.Thread | None:
    """Start trimming the build cache unless this process is trimming it already; the thread,
    if one was started."""
    return _one_at_a_time("sti-trim-build-cache", lambda: trim_build_cache(engine(), _log.warning))


def forget_source_images_in_background(engine: Engine) -> threading.Thread | None:
    """Start removing the source images beyond the keep limit, unless this process is at it
    already (what one running now misses, the next one removes)."""
    return _one_at_a_time("sti-forget-source-images", lambda: forget_older_source_images(engine()))


def _one_at_a_time(name: str, work: Callable[[], None]) -> threading.Thread | None:
    with _running_lock:
        running = _running.get(name)
        if running is not None and running.is_alive():
            return None
        thread = threading.Thread(target=_quietly, args=(name, work), name=name, daemon=True)
        _running[name] = thread
        thread.start()
        return thread


def _quietly(name: str, work: Callable[[], None]) -> None:
    try:
        work()
    except Exception:  # housekeeping: never the end of a worker
        _log.exception("housekeeping failed", job=name)
