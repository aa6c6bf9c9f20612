"""A Redis client for a worker that is stopping: one try of a second or two per command.

The worker's own client (resources.redis_client) rides out a broker outage by trying each command
again for about 90 s; a stopping worker must not wait that long to learn that the broker is gone
(systemd kills a service 90 s after asking it to stop).
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from sti.redis_tls import for_redis_py

BRIEF_S = 2


def brief_redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        for_redis_py(url),
        socket_connect_timeout=BRIEF_S,
        socket_timeout=BRIEF_S,
        retry=Retry(NoBackoff(), 0),
    )
