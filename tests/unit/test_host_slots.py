"""HostSlots: a host runs at most as many builds as its live workers offer slots; a running
build's entry expires unless renewed. Each test uses a host id of its own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from sti import keys
from sti.leases import Attempt, HostSlots


@pytest.fixture
def host(redis_client: redis.Redis) -> Iterator[HostSlots]:
    """A fresh host (60 s leases); its keys, and its entry in the host set, go afterwards."""
    host_id = f"unit-{uuid.uuid4().hex}"
    yield HostSlots(redis_client, host_id, lease_s=60)
    redis_client.delete(
        keys.host_running(host_id), keys.host_nodes(host_id), keys.host_slots(host_id)
    )
    redis_client.srem(keys.HOSTS, host_id)


def now_ms() -> int:
    return int(time.time() * 1000)


def test_a_registered_node_is_live_with_its_slots_and_the_host_is_listed(
    redis_client: redis.Redis, host: HostSlots
) -> None:
    assert host.live_nodes() == {}
    host.register_node("node-a", 2)
    host.register_node("node-b", 3)
    assert host.live_nodes() == {"node-a": 2, "node-b": 3}
    assert host.host_id.encode() in redis_client.smembers(keys.HOSTS)


def test_registering_again_updates_the_slots(host: HostSlots) -> None:
    host.register_node("node-a", 2)
    host.register_node("node-a", 4)
    assert host.live_nodes() == {"node-a": 4}


def test_an_unregistered_node_is_gone(host: HostSlots) -> None:
    host.register_node("node-a", 2)
    host.register_node("node-b", 1)
    host.unregister_node("node-a")
    assert host.live_nodes() == {"node-b": 1}


def test_a_node_whose_registration_expired_is_not_live(
    redis_client: redis.Redis, host: HostSlots
) -> None:
    host.register_node("node-a", 2)
    host.register_node("node-b", 1)
    redis_client.zadd(keys.host_nodes(host.host_id), {"node-a": now_ms() - 1_000})
    assert host.live_nodes() == {"node-b": 1}


def test_builds_are_claimed_up_to_the_live_slots_and_refused_beyond(host: HostSlots) -> None:
    host.register_node("node-a", 1)
    host.register_node("node-b", 2)
    assert [host.claim(f"build-{n}") for n in range(4)] == [True, True, True, False]
    assert sorted(host.running()) == ["build-0", "build-1", "build-2"]


def test_a_host_without_live_nodes_has_no_slots(redis_client: redis.Redis, host: HostSlots) -> None:
    assert not host.claim("build-0")
    host.register_node("node-a", 2)
    redis_client.zadd(keys.host_nodes(host.host_id), {"node-a": now_ms() - 1_000})
    assert not host.claim("build-0")
    assert host.running() == []


def test_releasing_a_build_frees_its_slot(host: HostSlots) -> None:
    host.register_node("node-a", 1)
    assert host.claim("build-0")
    assert not host.claim("build-1")
    host.release(Attempt("build-0", 1))
    assert host.running() == []
    assert host.claim("build-1")
    assert host.running() == ["build-1"]


def test_a_build_claiming_again_renews_its_own_slot(
    redis_client: redis.Redis, host: HostSlots
) -> None:
    host.register_node("node-a", 1)
    assert host.claim("build-0")
    running = keys.host_running(host.host_id)
    redis_client.zadd(running, {"build-0": now_ms() + 5_000})
    assert host.claim("build-0")  # its own slot, though every slot is taken
    expires = redis_client.zscore(running, "build-0")
    assert expires is not None and expires > now_ms() + 50_000
    assert host.running() == ["build-0"]


def test_renew_extends_a_running_build_and_adds_no_unknown_one(
    redis_client: redis.Redis, host: HostSlots
) -> None:
    host.register_node("node-a", 2)
    assert host.claim("build-0")
    running = keys.host_running(host.host_id)
    redis_client.zadd(running, {"build-0": now_ms() + 5_000})
    assert host.renew(Attempt("build-0", 1))
    host.renew(Attempt("build-unknown", 1))
    expires = redis_client.zscore(running, "build-0")
    assert expires is not None and expires > now_ms() + 50_000
    assert host.running() == ["build-0"]


def test_expired_running_entries_are_dropped_and_free_their_slots(
    redis_client: redis.Redis, host: HostSlots
) -> None:
    host.register_node("node-a", 1)
    assert host.claim("crashed-build")
    redis_client.zadd(keys.host_running(host.host_id), {"crashed-build": now_ms() - 1_000})
    assert host.running() == []
    assert host.claim("next-build")
    assert redis_client.zrange(keys.host_running(host.host_id), 0, -1) == [b"next-build"]
