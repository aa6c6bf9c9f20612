"""Per-build log in a Redis Stream: every line a build prints, capped and expiring.

A client that joins late reads the stream from the start, so it still sees the whole log.
"""

from __future__ import annotations

import redis

from sti import keys
from sti.redaction import redact


class BuildLog:
    def __init__(
        self, client: redis.Redis, build_id: str, *, max_lines: int, expires_s: int
    ) -> None:
        self._client = client
        self._key = keys.log_stream(build_id)
        self._max_lines = max_lines
        self._expires_s = expires_s

    def write(self, line: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(
            self._key, {keys.LINE_FIELD: redact(line)}, maxlen=self._max_lines, approximate=True
        )
        pipe.expire(self._key, self._expires_s)
        pipe.execute()

    def end(self) -> None:
        """Mark the log complete: followers stop here."""
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(self._key, {keys.END_FIELD: "1"}, maxlen=self._max_lines, approximate=True)
        pipe.expire(self._key, self._expires_s)
        pipe.execute()
