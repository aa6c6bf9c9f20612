"""Leases in Redis owned by an attempt of a build: the per-tag lock, the per-host build slots
and the registry of running builds.

A lease expires unless renewed, so a crashed worker never blocks a tag or a host for long. A
build whose worker was taken for dead runs again as a new attempt, which owns them from then on:
an earlier attempt that wakes up (a worker frozen or cut off past its lease) can neither renew
nor release them, and neither can an attempt that ended (a step of it delivered again, or
replayed from a captured message).

The build's claim (a hash) says which attempt owns it; anyone on Redis can write it, so what it
holds is checked before it is used (an attempt sti never writes, a key of another type).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import keys
from .errors import InternalError, InvalidInput
from .model import build_tag_for, is_build_id, normalized_tag
from .redis_values import is_wrong_type, refused_type

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
# KEYS: running zset, node-expiry zset, node-slots hash. ARGV: build id, now ms, lease ms, the
# most slots a node offers. A node's slots that are not a count sti writes offer none.
_CLAIM_SLOT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[2])
if redis.call('zscore', KEYS[1], ARGV[1]) then
  redis.call('zadd', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
  return 1
end
local slots = 0
for _, node in ipairs(redis.call('zrangebyscore', KEYS[2], ARGV[2], '+inf')) do
  local offered = string.match(redis.call('hget', KEYS[3], node) or '', '^%d+$')
  if offered and tonumber(offered) <= tonumber(ARGV[4]) then
    slots = slots + tonumber(offered)
  end
end
if redis.call('zcard', KEYS[1]) < slots then
  redis.call('zadd', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
  return 1
end
return 0
"""

# Whether an attempt owns its build's leases: the build's claim (KEYS[1]) names it (ARGV[1]),
# it did not end, and a reaper took it for lost or not, as the caller says (ARGV[2]: "1" for a
# reaper freeing what the attempt it took held). A claim that is gone (a Redis that lost its
# data) takes nothing from the attempt that runs; one that is not a hash gives nothing to any.
# Each script below begins with this check.
_OWNS = """
local kind = redis.call('type', KEYS[1])['ok']
if kind ~= 'hash' and kind ~= 'none' then
  return 0
end
local current = redis.call('hget', KEYS[1], 'attempt') or ARGV[1]
local taken = redis.call('hget', KEYS[1], 'taken') == ARGV[1]
local ended = redis.call('hget', KEYS[1], 'ended') == ARGV[1]
if current ~= ARGV[1] or ended or taken ~= (ARGV[2] == '1') then
  return 0
end
"""
# KEYS: claim, the lock of each tag. ARGV: attempt, taken, owner, lease ms. All or none: taken,
# or renewed by their holder.
_LOCK_TAGS = (
    _OWNS
    + """
for i = 2, #KEYS do
  local holder = redis.call('get', KEYS[i])
  if holder and holder ~= ARGV[3] then
    return 0
  end
end
for i = 2, #KEYS do
  redis.call('set', KEYS[i], ARGV[3], 'px', ARGV[4])
end
return 1
"""
)
_RELEASE_TAGS = (
    _OWNS
    + """
for i = 2, #KEYS do
  if redis.call('get', KEYS[i]) == ARGV[3] then
    redis.call('del', KEYS[i])
  end
end
return 1
"""
)
# KEYS: claim, a zset of leases. ARGV: attempt, taken, expiry ms, build id. Only a lease still
# there: one a reaper took stays taken. Returns 1 while the attempt owns it.
_RENEW_ENTRY = (
    _OWNS
    + """
redis.call('zadd', KEYS[2], 'XX', ARGV[3], ARGV[4])
return 1
"""
)
# KEYS: claim, a zset of leases. ARGV: attempt, taken, build id.
_REMOVE_ENTRY = (
    _OWNS
    + """
redis.call('zrem', KEYS[2], ARGV[3])
return 1
"""
)
# KEYS: claim, running zset. ARGV: attempt, taken, build id. The attempt ends: it owns nothing
# from then on, and the request it ran (whose source URL may hold credentials) is forgotten.
_END_ATTEMPT = (
    _OWNS
    + """
redis.call('zrem', KEYS[2], ARGV[3])
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hdel', KEYS[1], 'request')
  redis.call('hset', KEYS[1], 'ended', ARGV[1])
end
return 1
"""
)
# KEYS: claim. ARGV: attempt, taken, stage, task id. A stage of the attempt's chain begins once,
# in order: a later one, or the same one again by the task that began it (a message delivered
# again); an earlier one, or one another task began, is a copy (replayed, or of a chain made
# twice) that begins nothing. The claim keeps "stage.<attempt>" as "<stage>:<task id>".
_BEGIN_STAGE = (
    _OWNS
    + """
if redis.call('exists', KEYS[1]) == 0 then
  return 1
end
local field = 'stage.' .. ARGV[1]
local begun = redis.call('hget', KEYS[1], field)
if begun then
  local at, task = string.match(begun, '^(%d+):(.*)$')
  local stage = tonumber(ARGV[3])
  if not at or tonumber(at) > stage or (tonumber(at) == stage and task ~= ARGV[4]) then
    return 0
  end
end
redis.call('hset', KEYS[1], field, ARGV[3] .. ':' .. ARGV[4])
return 1
"""
)
# KEYS: running zset, claim. ARGV: build id, now ms. The lease of a running build, taken away
# only if it ran out (one reaper ends a lost build); its claim says which attempt was taken.
_TAKE_IF_EXPIRED = """
local expiry = redis.call('zscore', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) < tonumber(ARGV[2]) then
  redis.call('zrem', KEYS[1], ARGV[1])
  if redis.call('type', KEYS[2])['ok'] == 'hash' then
    redis.call('hset', KEYS[2], 'taken', redis.call('hget', KEYS[2], 'attempt') or '1')
  end
  return 1
end
return 0
"""
MAX_ATTEMPTS = 2  # a build whose worker died runs once more, then ends WorkerLost
MAX_NODE_SLOTS = 4096  # a node's slots (its worker's concurrency): more is not what sti writes
# the hosts a build's claim names at most (each claim adds its host; a copy of sti.build
# delivered again may claim on another): a cleanup is sent to each
MAX_CLAIMED_HOSTS = 8


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Attempt:
    """One attempt of a build (1, or more for a build run again after its worker died): it owns
    the build's leases while the build's claim names it and no reaper took it for lost.
    taken: a reaper acting for the attempt it took, to free what that attempt held."""

    build_id: str
    number: int
    taken: bool = False

    def owner_keys(self) -> list[str]:
        return [keys.build_claim(self.build_id)]

    def owner_args(self) -> list[str | int]:
        return [self.number, "1" if self.taken else "0"]


def attempt_number(value: bytes | str | None) -> int:
    """A claim's attempt as sti writes it, 1 to MAX_ATTEMPTS (a missing one is the first);
    anything else is not trusted: InternalError naming it."""
    if value is None:
        return 1
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if text not in {str(number) for number in range(1, MAX_ATTEMPTS + 1)}:
        raise InternalError(f"the build's claim in Redis has an attempt sti never writes: {text!r}")
    return int(text)


def claimed_hosts(claim: Mapping[str, str]) -> list[str]:
    """The hosts a build's claim says it ran on, as sti writes them: host ids (others are
    not sti's), at most MAX_CLAIMED_HOSTS of them."""
    named = {host for host in claim.get("hosts", "").split(",") if keys.is_host_id(host)}
    return sorted(named)[:MAX_CLAIMED_HOSTS]


def tags_locked_for(tag: str) -> list[str]:
    """What a build of tag locks, each as the engine files it (any spelling of one tag is one
    lock): the tag and its -build tag, which an extended build of it tags."""
    try:
        return [normalized_tag(tag), normalized_tag(build_tag_for(tag))]
    except InvalidInput:  # too long to have one: no extended build of it can run
        return [normalized_tag(tag)]


class TagLock:
    """At most one build of an APP_IMAGE_TAG (and its -build tag) at a time, across every
    host, held by an attempt of the build."""

    def __init__(
        self, client: RedisClient, tags: Sequence[str], attempt: Attempt, lease_s: int
    ) -> None:
        self._client = client
        self._keys = [keys.tag_lock(tag) for tag in tags]
        self._attempt = attempt
        self._lease_ms = lease_s * 1000
        # called by SHA1 (EVALSHA); the text goes to the server only the first time
        self._lock = client.register_script(_LOCK_TAGS)
        self._release = client.register_script(_RELEASE_TAGS)

    @classmethod
    def of_build(cls, client: RedisClient, tag: str, attempt: Attempt, lease_s: int) -> TagLock:
        return cls(client, tags_locked_for(tag), attempt, lease_s)

    def _call(self, script: Callable[..., Any]) -> bool:
        owner = self._attempt.owner_keys()
        args = [*self._attempt.owner_args(), self._attempt.build_id, self._lease_ms]
        return bool(script(keys=[*owner, *self._keys], args=args))

    def acquire(self) -> bool:
        """Every lock, or none (a build that waits holds nothing another needs)."""
        return self._call(self._lock)

    def renew(self) -> bool:
        """True if the attempt still holds every lock: each renewed, or taken again if it ran
        out (a worker stopped past its lease) and no other build took it meanwhile; False,
        touching nothing, when one did."""
        return self._call(self._lock)

    def release(self) -> None:
        self._call(self._release)

    def holder(self) -> str | None:
        """The build holding a lock this one wants, if another does."""
        for key in self._keys:
            value = self._client.get(key)
            holder = value.decode() if isinstance(value, bytes) else value
            if holder and holder != self._attempt.build_id:
                return holder
        return None


class HostSlots:
    """Builds running on one Docker host, at most as many as its live workers have slots."""

    def __init__(self, client: RedisClient, host_id: str, lease_s: int) -> None:
        self._client = client
        self.host_id = host_id
        self._lease_ms = lease_s * 1000
        self._claim_slot = client.register_script(_CLAIM_SLOT)
        self._renew_entry = client.register_script(_RENEW_ENTRY)
        self._remove_entry = client.register_script(_REMOVE_ENTRY)

    def claim(self, build_id: str) -> bool:
        """A slot for the build, if the host's live workers have one free. InternalError when
        the host's keys are not of the types sti writes."""
        slot_keys = [
            keys.host_running(self.host_id),
            keys.host_nodes(self.host_id),
            keys.host_slots(self.host_id),
        ]
        args = [build_id, _now_ms(), self._lease_ms, MAX_NODE_SLOTS]
        try:
            return bool(self._claim_slot(keys=slot_keys, args=args))
        except Exception as error:
            if not is_wrong_type(error):
                raise
            raise InternalError(
                f"the build slots of host {self.host_id} in Redis are not of the types sti writes "
                f"(a key of another type among {', '.join(slot_keys)})"
            ) from None

    def renew(self, attempt: Attempt) -> bool:
        """True while the attempt owns the build's slot."""
        lease = [keys.host_running(self.host_id)]
        expiry = _now_ms() + self._lease_ms
        args = [*attempt.owner_args(), expiry, attempt.build_id]
        return bool(self._renew_entry(keys=[*attempt.owner_keys(), *lease], args=args))

    def release(self, attempt: Attempt) -> None:
        lease = [keys.host_running(self.host_id)]
        args = [*attempt.owner_args(), attempt.build_id]
        self._remove_entry(keys=[*attempt.owner_keys(), *lease], args=args)

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
        decoded = {_text(k): _slot_count(v) for k, v in slots.items()}
        return {_text(node): decoded.get(_text(node), 0) for node in nodes}


def _slot_count(value: bytes | str) -> int:
    """A node's slots as a worker writes them; none for anything else."""
    text = _text(value)
    count = int(text) if text.isascii() and text.isdigit() else 0
    return count if count <= MAX_NODE_SLOTS else 0


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


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
    takes it, once, and ends the build or runs it again as a new attempt."""

    def __init__(self, client: RedisClient, lease_s: int) -> None:
        self._client = client
        self._lease_ms = lease_s * 1000
        self._take_if_expired = client.register_script(_TAKE_IF_EXPIRED)
        self._renew_entry = client.register_script(_RENEW_ENTRY)
        self._end_attempt = client.register_script(_END_ATTEMPT)
        self._begin_stage = client.register_script(_BEGIN_STAGE)

    def start(self, build_id: str, host_id: str, tag: str, keep_s: int, request: str) -> int:
        """Register a claimed build (request: its task keywords as JSON, to run it again);
        returns its attempt: 1, or the attempt a reaper made it (rerun)."""
        claim = keys.build_claim(build_id)
        earlier = claimed_hosts(self.claim_of(build_id))[: MAX_CLAIMED_HOSTS - 1]
        pipe = self._client.pipeline()
        pipe.hset(claim, mapping={"host": host_id, "tag": tag, "request": request})
        pipe.hset(claim, "hosts", ",".join(sorted({*earlier, host_id})))
        pipe.hsetnx(claim, "attempt", 1)
        pipe.hget(claim, "attempt")
        pipe.expire(claim, keep_s)
        pipe.zadd(keys.RUNNING_BUILDS, {build_id: _now_ms() + self._lease_ms})
        return attempt_number(pipe.execute()[3])

    def renew(self, attempt: Attempt) -> bool:
        """True while the attempt owns the build: the build's claim names it and no reaper
        took its lease (a lease taken stays taken)."""
        args = [*attempt.owner_args(), _now_ms() + self._lease_ms, attempt.build_id]
        lease = [*attempt.owner_keys(), keys.RUNNING_BUILDS]
        return bool(self._renew_entry(keys=lease, args=args))

    def end(self, attempt: Attempt) -> bool:
        """The attempt ended (the last thing it does: it owns nothing from then on, its other
        leases released first); its request (whose source URL may hold credentials) is
        forgotten. True for the one caller that ended it (the finish of its chain and an
        sti.abort may race: the one that ends it stores the result)."""
        args = [*attempt.owner_args(), attempt.build_id]
        return bool(self._end_attempt(keys=[*attempt.owner_keys(), keys.RUNNING_BUILDS], args=args))

    def begin_stage(self, attempt: Attempt, stage: int, task_id: str) -> bool:
        """Whether the task may run this stage of the attempt's chain (see _BEGIN_STAGE): the
        attempt owns the build, and no other task began this stage or a later one."""
        args = [*attempt.owner_args(), stage, task_id]
        return bool(self._begin_stage(keys=attempt.owner_keys(), args=args))

    def running_attempt(self, build_id: str) -> int | None:
        """The attempt that runs the build now, if one does: the claim's, neither ended nor
        taken, its lease not run out. InternalError for a claim sti never writes."""
        claim = self.claim_of(build_id)
        expiry = self._client.zscore(keys.RUNNING_BUILDS, build_id)
        if expiry is None or expiry < _now_ms():
            return None
        number = attempt_number(claim.get("attempt"))
        return None if str(number) in (claim.get("ended"), claim.get("taken")) else number

    def is_over(self, attempt: Attempt) -> bool:
        """Whether the attempt ended, or a reaper took it: a copy of its sti.build delivered
        late has nothing to run."""
        claim = self.claim_of(attempt.build_id)
        return str(attempt.number) in (claim.get("ended"), claim.get("taken"))

    def expired(self) -> list[str]:
        """The builds whose lease ran out. A member that is no build id is not one sti added
        (anyone on Redis can): it is dropped, and ends nothing."""
        found = self._client.zrangebyscore(keys.RUNNING_BUILDS, "-inf", _now_ms() - 1)
        members = [_text(item) for item in found]
        forged = [
            item for item, member in zip(found, members, strict=True) if not is_build_id(member)
        ]
        if forged:
            self._client.zrem(keys.RUNNING_BUILDS, *forged)
        return [member for member in members if is_build_id(member)]

    def take_expired(self, build_id: str) -> bool:
        """True for the one caller that takes this expired lease away; the attempt that held it
        owns nothing from then on."""
        lease = [keys.RUNNING_BUILDS, keys.build_claim(build_id)]
        return bool(self._take_if_expired(keys=lease, args=[build_id, _now_ms()]))

    def attempt_of(self, build_id: str) -> int:
        """The build's current attempt: a step of an earlier one is stale. InternalError for
        an attempt sti never writes."""
        return attempt_number(self.claim_of(build_id).get("attempt"))

    def rerun(self, build_id: str) -> int:
        """Make the build's next claim a new attempt (its last one's worker died); returns it."""
        return int(self._client.hincrby(keys.build_claim(build_id), "attempt", 1))

    def claim_of(self, build_id: str) -> dict[str, str]:
        """The host, tag, request, attempt and every host of the build (empty once forgotten),
        as Redis has them: nothing checked but that it is a hash (InternalError naming what
        it is instead)."""
        claim = keys.build_claim(build_id)
        try:
            found = self._client.hgetall(claim)
        except Exception as error:
            if not (kind := refused_type(self._client, claim, error)):
                raise
            raise InternalError(f"the build's claim in Redis is a {kind}, not a hash") from None
        return {_text(name): _text(value) for name, value in found.items()}
