"""A build host's housekeeping after a build's result, on a thread of its own, off the task
slots: removing the source images beyond STI_SOURCE_IMAGES_KEEP, and trimming the engine's
build cache.

Both delete hundreds of MB at a time: a trim can take seconds to tens of seconds of disk on a
busy host (BuildKit sizes every record it has not sized yet before it deletes the oldest), and
the engine holds every image request while it deletes an image's layers. Run in a task, they
would hold its slot and delay its result; run by the build that made one image more, they
would stall its own commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from .engine.docker_host import DockerHost
from .engine.pipeline import trim_build_cache
from .engine.source_images import forget_older

_log = structlog.stdlib.get_logger(__name__)

Engine = Callable[[], DockerHost | None]

_lock = threading.Lock()
_asked: dict[str, Callable[[DockerHost], None]] = {}  # chores asked for, not started yet
_busy = False  # a housekeeping thread is running; set and cleared under _lock


def tidy_in_background(engine: Engine, *, trim_cache: bool) -> threading.Thread | None:
    """The source images beyond the engine's limit removed and, if trim_cache, its build cache
    trimmed, on this process's housekeeping thread: one started unless it is running (it then
    does them once it has done what it is doing). The thread, if one was started."""
    global _busy
    with _lock:
        _asked["source images"] = forget_older
        if trim_cache:
            _asked["build cache"] = lambda host: trim_build_cache(host, _log.warning)
        if _busy:
            return None
        _busy = True
    thread = threading.Thread(target=_tidy, args=(engine,), name="sti-housekeeping", daemon=True)
    try:
        thread.start()
    except BaseException:
        with _lock:
            _busy = False
        raise
    return thread


def _tidy(engine: Engine) -> None:
    global _busy
    try:
        while True:
            with _lock:
                if not _asked:
                    _busy = False
                    return
                chores = dict(_asked)
                _asked.clear()
            for name, chore in chores.items():
                _do(name, chore, engine)
    except BaseException:  # the thread ends all the same: the next result starts another
        with _lock:
            _busy = False
        raise


def _do(name: str, chore: Callable[[DockerHost], None], engine: Engine) -> None:
    try:
        host = engine()
        if host is not None:
            chore(host)
    except Exception:  # housekeeping: never the end of a worker
        _log.exception("housekeeping failed", chore=name)
