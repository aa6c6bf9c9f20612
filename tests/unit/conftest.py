"""Fixtures of the fast tier: a client of the session's redis-server, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis


@pytest.fixture
def redis_client(broker_url: str) -> Iterator[redis.Redis]:
    """The session's Redis (shared with other tests: use ids of your own, flush nothing)."""
    client = redis.Redis.from_url(broker_url)
    yield client
    client.close()
