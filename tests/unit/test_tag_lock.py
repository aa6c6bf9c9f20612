"""TagLock: one build of an APP_IMAGE_TAG at a time, however the tag is spelt, held by an
attempt of the build, expiring unless renewed. Against the session's redis-server, each test on
a tag of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from sti import keys
from sti.leases import Attempt, TagLock, tags_locked_for
from sti.model import normalized_tag


@pytest.fixture
def tag(redis_client: redis.Redis) -> Iterator[str]:
    made = f"unit-test/lock-{uuid.uuid4().hex}"
    yield made
    redis_client.delete(*(keys.tag_lock(locked) for locked in tags_locked_for(made)))


def lock(client: redis.Redis, tag: str, owner: str, lease_s: int = 60) -> TagLock:
    return TagLock.of_build(client, tag, Attempt(owner, 1), lease_s)


def lock_key(tag: str) -> str:
    return keys.tag_lock(normalized_tag(tag))


def test_the_first_owner_gets_the_lock_and_is_its_holder(
    redis_client: redis.Redis, tag: str
) -> None:
    first = lock(redis_client, tag, "build-1")
    assert first.holder() is None
    assert first.acquire()
    assert redis_client.get(lock_key(tag)) == b"build-1"
    assert lock(redis_client, tag, "build-2").holder() == "build-1"


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
    assert lock(redis_client, tag, "build-2").holder() == "build-1"


def test_only_the_owner_renews_and_a_renewal_extends_the_lease(
    redis_client: redis.Redis, tag: str
) -> None:
    first = lock(redis_client, tag, "build-1", lease_s=60)
    assert first.acquire()
    redis_client.pexpire(lock_key(tag), 5_000)
    assert not lock(redis_client, tag, "build-2").renew()
    assert redis_client.pttl(lock_key(tag)) <= 5_000
    assert first.renew()
    assert redis_client.pttl(lock_key(tag)) > 50_000


def test_a_renewal_takes_again_a_lock_that_ran_out_when_nobody_took_it(
    redis_client: redis.Redis, tag: str
) -> None:
    assert lock(redis_client, tag, "build-1").renew()
    assert redis_client.get(lock_key(tag)) == b"build-1"


def test_only_the_owner_releases_it(redis_client: redis.Redis, tag: str) -> None:
    first = lock(redis_client, tag, "build-1")
    assert first.acquire()
    lock(redis_client, tag, "build-2").release()
    assert lock(redis_client, tag, "build-2").holder() == "build-1"
    first.release()
    assert lock(redis_client, tag, "build-2").holder() is None
    assert lock(redis_client, tag, "build-2").acquire()


def test_an_expired_lease_frees_the_tag_for_another_owner(
    redis_client: redis.Redis, tag: str
) -> None:
    first = lock(redis_client, tag, "build-1", lease_s=1)
    assert first.acquire()
    ttl = redis_client.pttl(lock_key(tag))
    assert 0 < ttl <= 1_000
    for locked in tags_locked_for(tag):  # as if the lease ran out
        redis_client.pexpire(keys.tag_lock(locked), 20)
    time.sleep(0.05)
    assert lock(redis_client, tag, "build-2").holder() is None
    second = lock(redis_client, tag, "build-2")
    assert second.acquire()
    assert not first.renew()
    assert first.holder() == "build-2"


def test_a_build_holds_its_build_tag_too(redis_client: redis.Redis, tag: str) -> None:
    """An extended build of tag also tags tag-build: a build of that tag waits for it, and
    the other way round."""
    assert lock(redis_client, tag, "build-1").acquire()
    assert redis_client.get(lock_key(f"{tag}-build")) == b"build-1"
    other = lock(redis_client, f"{tag}-build", "build-2")
    assert not other.acquire()
    assert other.holder() == "build-1"
    # all or nothing: the refused build holds none of the locks it asked for
    assert redis_client.get(lock_key(f"{tag}-build-build")) is None
