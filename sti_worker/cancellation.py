"""Watching a running step for a cancel flag (sti.cancel_flags).

The watcher also renews the build's leases, so a live build keeps its tag lock and host slot; a
renewal that finds one lost for good (another build took the tag's lock) stops the step as a
cancel does, with the error it gives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis
import structlog

from sti.cancel_flags import cancel_requested
from sti.errors import StiError

_POLL_S = 0.5
_log = structlog.stdlib.get_logger(__name__)


class StepWatcher:
    """A thread that, while a step runs, renews leases and aborts the step on cancel, or when a
    renewal says the build cannot go on (renew returns the error it ends with)."""

    def __init__(
        self,
        client: redis.Redis,
        build_id: str,
        *,
        renew: Callable[[], StiError | None],
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
        self.cancelled: StiError | None = None  # what stopped the step: a cancel, or a renewal

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
                    stopped = self._renew()
                    last_renewal = time.monotonic()
                    if stopped is not None and self.cancelled is None:
                        self.cancelled = stopped
                        self._abort()
            except Exception:  # a failing watcher must never kill the build
                _log.warning("step watcher check failed", build_id=self._build_id, exc_info=True)
