"""Reading what Redis holds as what anyone who can reach it may have written: a key of any
type, a value of any size (up to 512 MB in one key). A value is read up to a bound, and a key
of another type is said, not raised as a bare WRONGTYPE (with either client: redis-py's
ResponseError, or sti-submit's BrokerRefused)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .redis_wire import RedisClient

_WRONG_TYPE = "WRONGTYPE"
# the key's type and, for a string, its first ARGV[1] bytes: one round trip, no error
_READ_STRING = """
local kind = redis.call('type', KEYS[1])['ok']
if kind ~= 'string' then
  return {kind}
end
return {kind, redis.call('getrange', KEYS[1], 0, ARGV[1] - 1)}
"""


def is_wrong_type(error: BaseException) -> bool:
    """Whether Redis refused a command for the type of the key it named."""
    said = getattr(error, "reply", None) or str(error)
    return isinstance(said, str) and said.startswith(_WRONG_TYPE)


def refused_type(client: RedisClient, key: str, error: BaseException) -> str | None:
    """The type of key when error is Redis refusing a command for it; None for any other
    error."""
    return read_string(client, key, 0).kind if is_wrong_type(error) else None


@dataclass(frozen=True)
class Stored:
    """A key as Redis holds it: its type (none, string, hash, list, ...) and, for a string,
    its first bytes."""

    kind: str
    head: bytes = b""

    @property
    def exists(self) -> bool:
        return self.kind != "none"


def read_string(client: RedisClient, key: str, max_bytes: int) -> Stored:
    """The key's type and, for a string, at most max_bytes + 1 of its bytes (so that one longer
    than max_bytes shows as such, without being read whole)."""
    reply = client.register_script(_READ_STRING)(keys=[key], args=[max_bytes + 1])
    kind = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    return Stored(kind, reply[1] if len(reply) > 1 else b"")
