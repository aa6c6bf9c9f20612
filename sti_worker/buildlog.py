"""Per-build log in a Redis Stream: every line a build prints, capped and expiring.

A client that joins late reads the stream from the start, so it still sees the whole log.
"""

from __future__ import annotations

import redis

from sti import keys
from sti.redaction import redact

_PENDING_MAX = 1000


class BuildLog:
    def __init__(
        self, client: redis.Redis, build_id: str, *, max_lines: int, expires_s: int
    ) -> None:
        self._client = client
        self._key = keys.log_stream(build_id)
        self._max_lines = max_lines
        self._expires_s = expires_s
        self._pending: list[str] = []

    def write(self, line: str) -> None:
        """Append a line. While Redis is unreachable lines wait here (the newest _PENDING_MAX)
        and go out with the next write that reaches it: a broker outage never fails the build
        that prints."""
        self._pending.append({keys.LINE_FIELD: redact(line)})
        self._flush()

    def end(self) -> None:
        """Mark the log complete: followers stop here (or when the build's state is final, if
        Redis was away at the time)."""
        self._pending.append({keys.END_FIELD: "1"})
        self._flush()

    def _flush(self) -> None:
        del self._pending[:-_PENDING_MAX]
        pipe = self._client.pipeline(transaction=False)
        for fields in self._pending:
            pipe.xadd(self._key, fields, maxlen=self._max_lines, approximate=True)
        pipe.expire(self._key, self._expires_s)
        try:
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            return
        self._pending.clear()
