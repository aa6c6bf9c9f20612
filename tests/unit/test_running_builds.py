"""The registry of running builds and the reaper of those whose worker died: a lease that ran
out is taken once, by one reaper, after its Redis connection has settled; a live lease never.
Against a database of the session's redis-server that no worker uses."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from sti import keys
from sti.leases import Attempt, RunningBuilds
from sti_worker.reaper import Reaper
from tests.services import RedisServer


@pytest.fixture
def registry_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url(14))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _started(client: redis.Redis, lease_s: int, tag: str = "acme/app") -> str:
    build_id = uuid.uuid4().hex
    attempt = RunningBuilds(client, lease_s).start(build_id, "host-a", tag, 60, '{"source": "x"}')
    assert attempt == 1
    return build_id


def test_a_running_build_is_not_expired_and_says_where_it_was_claimed(
    registry_client: redis.Redis,
) -> None:
    build_id = _started(registry_client, lease_s=60)
    registry = RunningBuilds(registry_client, 60)
    assert registry.expired() == []
    assert not registry.take_expired(build_id)
    assert registry.claim_of(build_id) == {
        "host": "host-a",
        "tag": "acme/app",
        "request": '{"source": "x"}',
        "attempt": "1",
        "hosts": "host-a",
    }
    registry.end(Attempt(build_id, 1))
    assert registry_client.zscore(keys.RUNNING_BUILDS, build_id) is None
    assert "request" not in registry.claim_of(build_id)


def test_a_build_run_again_is_a_new_attempt_that_remembers_every_host(
    registry_client: redis.Redis,
) -> None:
    build_id = _started(registry_client, lease_s=60)
    registry = RunningBuilds(registry_client, 60)
    assert registry.attempt_of(build_id) == 1
    assert registry.rerun(build_id) == 2
    assert registry.attempt_of(build_id) == 2
    assert registry.start(build_id, "host-b", "acme/app", 60, "{}") == 2  # the claim keeps it
    assert registry.claim_of(build_id)["hosts"] == "host-a,host-b"
    assert registry.claim_of(build_id)["host"] == "host-b"
    assert registry.attempt_of(uuid.uuid4().hex) == 1  # a claim forgotten: the first


def test_an_expired_lease_is_taken_once_and_renewing_does_not_bring_it_back(
    registry_client: redis.Redis,
) -> None:
    build_id = _started(registry_client, lease_s=0)
    time.sleep(0.01)
    registry = RunningBuilds(registry_client, 60)
    assert registry.expired() == [build_id]
    assert registry.take_expired(build_id)
    assert not registry.take_expired(build_id)
    assert registry.claim_of(build_id)["taken"] == "1"
    # the worker was only slow: its lease stays taken, and it knows it owns the build no more
    assert not registry.renew(Attempt(build_id, 1))
    assert registry.expired() == []
    assert registry_client.zscore(keys.RUNNING_BUILDS, build_id) is None


def test_renewing_keeps_a_live_build_from_the_reaper(registry_client: redis.Redis) -> None:
    build_id = _started(registry_client, lease_s=1)
    registry = RunningBuilds(registry_client, 1)
    for _ in range(3):
        time.sleep(0.4)
        assert registry.renew(Attempt(build_id, 1))
    assert registry.expired() == []
    assert not registry.take_expired(build_id)


def _reaper(client: redis.Redis, ended: list[str], lease_s: float) -> Reaper:
    return Reaper(lambda: RunningBuilds(client, 60), ended.append, lease_s)


def test_a_reaper_judges_only_after_its_connection_has_settled(
    registry_client: redis.Redis,
) -> None:
    lost, live = _started(registry_client, lease_s=0), _started(registry_client, lease_s=60)
    time.sleep(0.01)
    ended: list[str] = []
    reaper = _reaper(registry_client, ended, lease_s=0.4)
    assert reaper.reap() == []  # just (re)connected: live workers renew first
    time.sleep(0.25)
    assert reaper.reap() == [lost]
    assert ended == [lost]
    assert registry_client.zscore(keys.RUNNING_BUILDS, live) is not None


def test_many_reapers_end_each_lost_build_once(registry_client: redis.Redis) -> None:
    lost = sorted(_started(registry_client, lease_s=0) for _ in range(20))
    time.sleep(0.01)
    ended: list[str] = []
    reapers = [_reaper(registry_client, ended, lease_s=0) for _ in range(4)]
    threads = [threading.Thread(target=reaper.reap) for reaper in reapers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ended) == lost
