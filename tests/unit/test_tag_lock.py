"""TagLock: one build of an APP_IMAGE_TAG at a time, owned by its build id, expiring unless
renewed. Against the session's redis-server, each test on a tag of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from sti import keys
from sti.leases import TagLock


@pytest.fixture
def tag(redis_client: redis.Redis) -> Iterator[str]:
    made = f"unit-test/lock-{uuid.uuid4().hex}"
    yield made
    redis_client.delete(keys.tag_lock(made))


def lock(client: redis.Redis, tag: str, owner: str, lease_s: int = 60) -> TagLock:
    return TagLock(client, tag, owner, lease_s)


def test_the_first_owner_gets_the_lock_and_is_its_holder(
    redis_client: redis.Redis, tag: str
) -> None:
    first = lock(redis_client, tag, "build-1")
    assert first.holder() is None
    assert first.acquire()
    assert first.holder() == "build-1"


def test_a_second_owner_is_refused_while_the_first_holds_it(
    redis_client: redis.Redis, tag: str
) -> None:
    assert lock(redis_client, tag, "build-1").acquire()
    second = lock(redis_client, tag, "build-2")
    assert not second.acquire()
    assert second.holder() == "build-1"


def test_the_owner_acquiring_again_keeps_it(redis_client: redis.Redis, tag: str) -> None:
    first = lock(redis_client, tag, "build-1")
    assert first.acquire()
    assert first.acquire()
    assert first.holder() == "build-1"


def test_only_the_owner_renews_and_a_renewal_extends_the_lease(
    redis_client: redis.Redis, tag: str
) -> None:
    first = lock(redis_client, tag, "build-1", lease_s=60)
    assert first.acquire()
    redis_client.pexpire(keys.tag_lock(tag), 5_000)
    assert not lock(redis_client, tag, "build-2").renew()
    assert redis_client.pttl(keys.tag_lock(tag)) <= 5_000
    assert first.renew()
    assert redis_client.pttl(keys.tag_lock(tag)) > 50_000


def test_nobody_renews_a_lock_nobody_holds(redis_client: redis.Redis, tag: str) -> None:
    assert not lock(redis_client, tag, "build-1").renew()
    assert lock(redis_client, tag, "build-1").holder() is None


def test_only_the_owner_releases_it(redis_client: redis.Redis, tag: str) -> None:
    first = lock(redis_client, tag, "build-1")
    assert first.acquire()
    lock(redis_client, tag, "build-2").release()
    assert first.holder() == "build-1"
    first.release()
    assert first.holder() is None
    assert lock(redis_client, tag, "build-2").acquire()


def test_an_expired_lease_frees_the_tag_for_another_owner(
    redis_client: redis.Redis, tag: str
) -> None:
    first = lock(redis_client, tag, "build-1", lease_s=1)
    assert first.acquire()
    ttl = redis_client.pttl(keys.tag_lock(tag))
    assert 0 < ttl <= 1_000
    redis_client.pexpire(keys.tag_lock(tag), 20)  # as if the lease ran out
    time.sleep(0.05)
    assert first.holder() is None
    assert not first.renew()
    second = lock(redis_client, tag, "build-2")
    assert second.acquire()
    assert second.holder() == "build-2"
