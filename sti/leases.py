"""Leases in Redis owned by a build id: the per-tag lock, the per-host build slots and the
registry of running builds.

A lease expires unless renewed, so a crashed worker never blocks a tag or a host for long.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING

from . import keys

if TYPE_CHECKING:
    from .redis_wire import RedisClient

_RENEW_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_IF_OWNER = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
# KEYS: running zset, node-expiry zset, node-slots hash. ARGV: build id, now ms, lease ms.
_CLAIM_SLOT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[2])
if redis.call('zscore', KEYS[1], ARGV[1]) then
  redis.call('zadd', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
  return 1
end
local slots = 0
for _, node in ipairs(redis.call('zrangebyscore', KEYS[2], ARGV[2], '+inf')) do
  slots = slots + tonumber(redis.call('hget', KEYS[3], node) or '0')
end
if redis.call('zcard', KEYS[1]) < slots then
  redis.call('zadd', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
  return 1
end
return 0
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


# the lease of a running build, taken away only if it ran out: one reaper ends a lost build
_TAKE_IF_EXPIRED = """
local expiry = redis.call('zscore', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) < tonumber(ARGV[2]) then
  redis.call('zrem', KEYS[1], ARGV[1])
  return 1
end
return 0
"""


class TagLock:
    """At most one build of an APP_IMAGE_TAG at a time, across every host."""

    def __init__(self, client: RedisClient, tag: str, owner: str, lease_s: int) -> None:
        self._client = client
        self._key = keys.tag_lock(tag)
        self._owner = owner
        self._lease_ms = lease_s * 1000
        # called by SHA1 (EVALSHA); the text goes to the server only the first time
        self._renew_if_owner = client.register_script(_RENEW_IF_OWNER)
        self._release_if_owner = client.register_script(_RELEASE_IF_OWNER)

    def acquire(self) -> bool:
        if self._client.set(self._key, self._owner, nx=True, px=self._lease_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        return bool(self._renew_if_owner(keys=[self._key], args=[self._owner, self._lease_ms]))

    def release(self) -> None:
        self._release_if_owner(keys=[self._key], args=[self._owner])

    def holder(self) -> str | None:
        value = self._client.get(self._key)
        return value.decode() if isinstance(value, bytes) else value


class HostSlots:
    """Builds running on one Docker host, at most as many as its live workers have slots."""

    def __init__(self, client: RedisClient, host_id: str, lease_s: int) -> None:
        self._client = client
        self.host_id = host_id
        self._lease_ms = lease_s * 1000
        self._claim_slot = client.register_script(_CLAIM_SLOT)

    def claim(self, build_id: str) -> bool:
        slot_keys = [
            keys.host_running(self.host_id),
            keys.host_nodes(self.host_id),
            keys.host_slots(self.host_id),
        ]
        return bool(self._claim_slot(keys=slot_keys, args=[build_id, _now_ms(), self._lease_ms]))

    def renew(self, build_id: str) -> None:
        self._client.zadd(
            keys.host_running(self.host_id), {build_id: _now_ms() + self._lease_ms}, xx=True
        )

    def release(self, build_id: str) -> None:
        self._client.zrem(keys.host_running(self.host_id), build_id)

    def running(self) -> list[str]:
        found = self._client.zrangebyscore(keys.host_running(self.host_id), _now_ms(), "+inf")
        return [item.decode() if isinstance(item, bytes) else item for item in found]

    def register_node(self, node: str, slots: int) -> None:
        """Called periodically by every worker: it is alive and offers this many slots."""
        pipe = self._client.pipeline()
        pipe.sadd(keys.HOSTS, self.host_id)
        pipe.hset(keys.host_slots(self.host_id), node, slots)
        pipe.zadd(keys.host_nodes(self.host_id), {node: _now_ms() + self._lease_ms})
        pipe.execute()

    def unregister_node(self, node: str) -> None:
        pipe = self._client.pipeline()
        pipe.zrem(keys.host_nodes(self.host_id), node)
        pipe.hdel(keys.host_slots(self.host_id), node)
        pipe.execute()

    def live_nodes(self) -> dict[str, int]:
        now = _now_ms()
        nodes = self._client.zrangebyscore(keys.host_nodes(self.host_id), now, "+inf")
        slots = self._client.hgetall(keys.host_slots(self.host_id))
        decoded = {_text(k): int(v) for k, v in slots.items()}
        return {_text(node): decoded.get(_text(node), 0) for node in nodes}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StepOnce:
    """A build step's task runs once at a time and takes effect once.

    A broker outage makes Celery restore a running step's message, so the step can be delivered
    again while it still runs, or after it finished. The first execution holds a lease (renewed
    while it runs, so a dead worker's expires); a copy that finds it held waits; a copy that
    finds the step's output returns that output instead of running the step again."""

    def __init__(self, client: RedisClient, task_id: str, lease_s: int) -> None:
        self._client = client
        self._running = keys.step_running(task_id)
        self._output = keys.step_output(task_id)
        self._owner = uuid.uuid4().hex
        self._lease_ms = lease_s * 1000
        self._renew_if_owner = client.register_script(_RENEW_IF_OWNER)
        self._release_if_owner = client.register_script(_RELEASE_IF_OWNER)

    def output(self) -> str | None:
        """The output of an execution that finished, if one did."""
        value = self._client.get(self._output)
        return value.decode() if isinstance(value, bytes) else value

    def begin(self) -> bool:
        """Take the step's lease; False while another execution holds it."""
        return bool(self._client.set(self._running, self._owner, nx=True, px=self._lease_ms))

    def renew(self) -> None:
        self._renew_if_owner(keys=[self._running], args=[self._owner, self._lease_ms])

    def end(self, output: str, expires_s: int) -> None:
        """Record the output for later copies, then let the lease go."""
        self._client.set(self._output, output, ex=expires_s)
        self.release()

    def release(self) -> None:
        self._release_if_owner(keys=[self._running], args=[self._owner])


class RunningBuilds:
    """Every claimed build, on every host, with a lease its worker renews while the build runs
    (with the host slot and the tag lock). A lease that ran out means the worker died: a reaper
    takes it, once, and ends the build."""

    def __init__(self, client: RedisClient, lease_s: int) -> None:
        self._client = client
        self._lease_ms = lease_s * 1000
        self._take_if_expired = client.register_script(_TAKE_IF_EXPIRED)

    def start(self, build_id: str, host_id: str, tag: str, keep_s: int, request: str) -> int:
        """Register a claimed build (request: its task keywords as JSON, to run it again);
        returns its attempt: 1, or the attempt a reaper made it (rerun)."""
        claim = keys.build_claim(build_id)
        hosts = self.claim_of(build_id).get("hosts", "")
        pipe = self._client.pipeline()
        pipe.hset(claim, mapping={"host": host_id, "tag": tag, "request": request})
        pipe.hset(claim, "hosts", ",".join(sorted({*hosts.split(","), host_id} - {""})))
        pipe.hsetnx(claim, "attempt", 1)
        pipe.hget(claim, "attempt")
        pipe.expire(claim, keep_s)
        pipe.zadd(keys.RUNNING_BUILDS, {build_id: _now_ms() + self._lease_ms})
        return int(pipe.execute()[3])

    def renew(self, build_id: str) -> None:
        """Only a lease still held: a build a reaper took stays taken."""
        self._client.zadd(keys.RUNNING_BUILDS, {build_id: _now_ms() + self._lease_ms}, xx=True)

    def end(self, build_id: str) -> None:
        """The build ended: its request (whose source URL may hold credentials) is forgotten."""
        pipe = self._client.pipeline()
        pipe.zrem(keys.RUNNING_BUILDS, build_id)
        pipe.hdel(keys.build_claim(build_id), "request")
        pipe.execute()

    def expired(self) -> list[str]:
        found = self._client.zrangebyscore(keys.RUNNING_BUILDS, "-inf", _now_ms() - 1)
        return [_text(item) for item in found]

    def take_expired(self, build_id: str) -> bool:
        """True for the one caller that takes this expired lease away."""
        return bool(self._take_if_expired(keys=[keys.RUNNING_BUILDS], args=[build_id, _now_ms()]))

    def attempt_of(self, build_id: str) -> int:
        """The build's current attempt: a step of an earlier one is stale."""
        attempt = self._client.hget(keys.build_claim(build_id), "attempt")
        return int(attempt) if attempt is not None else 1

    def rerun(self, build_id: str) -> int:
        """Make the build's next claim a new attempt (its last one's worker died); returns it."""
        return int(self._client.hincrby(keys.build_claim(build_id), "attempt", 1))

    def claim_of(self, build_id: str) -> dict[str, str]:
        """The host, tag, request, attempt and every host of the build (empty once forgotten)."""
        found = self._client.hgetall(keys.build_claim(build_id))
        return {_text(name): _text(value) for name, value in found.items()}
