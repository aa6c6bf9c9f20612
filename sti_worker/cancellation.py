"""Cancelling a build: a flag in Redis set by the client, watched while each step runs.

The watcher also renews the build's leases, so a live build keeps its tag lock and host slot.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis
import structlog

from . import keys
from .engine.errors import Cancelled, StiError, error_class

_POLL_S = 0.5
_log = structlog.stdlib.get_logger(__name__)


def request_cancel(
    client: redis.Redis, build_id: str, code: str, message: str, expires_s: int
) -> None:
    client.set(
        keys.cancel_flag(build_id), json.dumps({"code": code, "message": message}), ex=expires_s
    )


def cancel_requested(client: redis.Redis, build_id: str) -> StiError | None:
    raw = client.get(keys.cancel_flag(build_id))
    if raw is None:
        return None
    data = json.loads(raw)
    error_type = error_class(data.get("code", Cancelled.code))
    return error_type(data.get("message") or "the build was cancelled")


class StepWatcher:
    """A thread that, while a step runs, renews leases and aborts the step on cancel."""

    def __init__(
        self,
        client: redis.Redis,
        build_id: str,
        *,
        renew: Callable[[], None],
        abort: Callable[[], None],
        renew_every_s: float,
    ) -> None:
        self._client = client
        self._build_id = build_id
        self._renew = renew
        self._abort = abort
        self._renew_every_s = renew_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sti-watch", daemon=True)
        self.cancelled: StiError | None = None

    def __enter__(self) -> StepWatcher:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        last_renewal = time.monotonic()
        while not self._stop.wait(_POLL_S):
            try:
                if self.cancelled is None:
                    self.cancelled = cancel_requested(self._client, self._build_id)
                    if self.cancelled is not None:
                        self._abort()
                if time.monotonic() - last_renewal >= self._renew_every_s:
                    self._renew()
                    last_renewal = time.monotonic()
            except Exception:  # a failing watcher must never kill the build
                _log.warning("step watcher check failed", build_id=self._build_id, exc_info=True)
