"""Per-build log in a Redis Stream: every line a build prints, capped and expiring.

A client that joins late reads the stream from the start, so it still sees the whole log. Each
line is held to STI_LOG_LINE_MAX_BYTES and a build's log to STI_LOG_MAX_BYTES (Redis runs
`noeviction`: one build's output must not fill it and stop every queue); the bytes a build's log
holds are counted in Redis, as its tasks write in turn.
"""

from __future__ import annotations

import redis

from sti import keys
from sti.lines import LINE_MAX_BYTES, LOG_MAX_BYTES, shown_line, storable, utf8_size

_PENDING_MAX = 1000


class BuildLog:
    def __init__(
        self,
        client: redis.Redis,
        build_id: str,
        *,
        max_lines: int,
        expires_s: int,
        max_bytes: int = LOG_MAX_BYTES,
        max_line_bytes: int = LINE_MAX_BYTES,
    ) -> None:
        self._client = client
        self._key = keys.log_stream(build_id)
        self._bytes_key = f"{self._key}:bytes"  # what the stream holds, by every writer
        self._max_lines = max_lines
        self._expires_s = expires_s
        self._max_bytes = max_bytes
        self._max_line_bytes = max_line_bytes
        self._pending: list[dict[str, str]] = []
        self._used: int | None = None  # the log's bytes, once read from Redis
        self._full = False

    def write(self, line: str) -> None:
        """Append a line (masked and held to the line cap, a lone surrogate escaped: Redis takes
        UTF-8 only). While Redis is unreachable lines wait here (the newest _PENDING_MAX) and go
        out with the next write that reaches it: a broker outage never fails the build that
        prints. Past the log's cap lines are dropped, after one saying so."""
        if self._full:
            return
        self._pending.append({keys.LINE_FIELD: shown_line(line, self._max_line_bytes)})
        self._flush()

    def end(self) -> None:
        """Mark the log complete: followers stop here (or when the build's state is final, if
        Redis was away at the time)."""
        self._pending.append({keys.END_FIELD: "1"})
        self._flush()

    def _flush(self) -> None:
        del self._pending[:-_PENDING_MAX]
        try:
            stored = self._used
            if stored is None:
                stored = _count(self._client.get(self._bytes_key))
            entries, used = self._within_cap(stored or 0)
            pipe = self._client.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(self._key, fields, maxlen=self._max_lines, approximate=True)
            if stored is None:  # not a count: written by someone else, replaced
                pipe.set(self._bytes_key, used)
            else:
                pipe.incrby(self._bytes_key, used - stored)
            pipe.expire(self._key, self._expires_s)
            pipe.expire(self._bytes_key, self._expires_s)
            counted = pipe.execute()[len(entries)]
        except (redis.ConnectionError, redis.TimeoutError):
            return
        except UnicodeEncodeError:  # a lone surrogate: escaped, as Redis takes UTF-8 only
            cap = self._max_line_bytes
            self._pending = [
                {k: shown_line(storable(v), cap) for k, v in f.items()} for f in self._pending
            ]
            self._flush()
            return
        # INCRBY's answer counts the other writers of the build's log too
        self._used = used if stored is None else int(counted)
        self._full = self._used > self._max_bytes
        self._pending.clear()

    def _within_cap(self, used: int) -> tuple[list[dict[str, str]], int]:
        """The pending entries that fit in a log holding used bytes, the last saying where the
        log was cut if they do not all fit; and what the log then holds (past the cap once it
        was cut, whatever the notice's size)."""
        entries: list[dict[str, str]] = []
        for fields in self._pending:
            line = fields.get(keys.LINE_FIELD)
            if line is None:
                entries.append(fields)
            elif used <= self._max_bytes:
                size = utf8_size(line)
                cut = used + size > self._max_bytes
                entries.append({keys.LINE_FIELD: self._cut_notice()} if cut else fields)
                used = self._max_bytes + 1 if cut else used + size
        return entries, used

    def _cut_notice(self) -> str:
        return (
            f"[the log was cut at {self._max_bytes} bytes (STI_LOG_MAX_BYTES): the build goes "
            "on, its later lines are not kept]"
        )


def _count(value: object) -> int | None:
    """The byte count as Redis holds it (nothing: 0), or None when it holds no count."""
    if value is None:
        return 0
    try:
        count = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return count if count >= 0 else None
