"""Builds whose worker died: every worker looks, now and then, for builds whose lease ran out
(sti.leases.RunningBuilds; a live build's worker renews it every quarter lease), and one of
them takes each such build, to run it again or end it with WorkerLost (tasks.end_lost_build).

With the default 60 s lease a killed worker's build is taken within about 70 s, on any live host.
After its own Redis connection comes back from an outage, a reaper waits half a lease before it
judges: the live builds' workers renew their leases in that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from sti.leases import RunningBuilds

_log = structlog.stdlib.get_logger(__name__)


class Reaper:
    def __init__(
        self,
        registry: Callable[[], RunningBuilds],
        end_build: Callable[[str], None],
        lease_s: float,
    ) -> None:
        self._registry = registry
        self._end_build = end_build
        self._every_s = max(lease_s / 6, 1)
        self._settle_s = lease_s / 2
        self._stop = threading.Event()
        self._healthy_since: float | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="sti-reaper", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.reap()
            except Exception:  # a failing reaper never takes the worker down
                self._healthy_since = None
                _log.warning("looking for builds whose worker died failed", exc_info=True)

    def reap(self) -> list[str]:
        """End the builds whose lease ran out; returns those this reaper ended."""
        registry = self._registry()
        expired = registry.expired()
        now = time.monotonic()
        self._healthy_since = self._healthy_since or now
        if now - self._healthy_since < self._settle_s:
            return []
        ended = []
        for build_id in expired:
            if not registry.take_expired(build_id):
                continue
            _log.warning("taking a build whose worker died", build_id=build_id)
            try:
                self._end_build(build_id)
            except Exception:  # one build's failure keeps no other waiting
                _log.warning(
                    "ending a build whose worker died failed", build_id=build_id, exc_info=True
                )
                continue
            ended.append(build_id)
        return ended
