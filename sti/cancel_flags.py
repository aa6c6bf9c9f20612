"""Cancelling a build: a flag in Redis the client sets and the worker reads between and during
steps. The flag carries the error the build ends with (Cancelled, TimedOut for a client's
deadline, or what a worker ended a lost build with).

Anyone on Redis can write a flag: one that is not what request_cancel writes (a key of another
type, a value too long to be one, not JSON) still cancels the build (it was set to stop it), as
Cancelled, with a message that says what the flag held; a flag is never read whole.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import keys
from .errors import Cancelled, InternalError, InvalidInput, StiError, TimedOut, WorkerLost
from .redis_values import read_string

if TYPE_CHECKING:
    from .redis_wire import RedisClient

CODES: dict[str, type[StiError]] = {
    error.code: error for error in (Cancelled, TimedOut, WorkerLost, InternalError)
}
MESSAGE_CHARS = 1000
_SHOWN_BYTES = 100
# what request_cancel writes is shorter: 1000 characters, each at most 12 bytes in JSON
_FLAG_MAX_BYTES = 16 * 1024
_NOT_OURS = "the build was cancelled by a cancel flag sti never writes"


def request_cancel(
    client: RedisClient, build_id: str, code: str, message: str, expires_s: int
) -> None:
    """Ask the build to stop with the error of code (one of CODES) and message (made one line
    of at most MESSAGE_CHARS)."""
    if code not in CODES:
        raise InvalidInput(f"a build is cancelled with one of {sorted(CODES)}, not {code!r}")
    line = "".join(c if c.isprintable() else " " for c in message[:MESSAGE_CHARS]).strip()
    flag = json.dumps({"code": code, "message": line or "the build was cancelled"})
    client.set(keys.cancel_flag(build_id), flag, ex=expires_s)


def cancel_requested(client: RedisClient, build_id: str) -> StiError | None:
    """The error the build is to stop with, if its flag is set."""
    flag = read_string(client, keys.cancel_flag(build_id), _FLAG_MAX_BYTES)
    if not flag.exists:
        return None
    if flag.kind != "string":
        return Cancelled(f"{_NOT_OURS}: a {flag.kind}")
    if len(flag.head) > _FLAG_MAX_BYTES:
        return Cancelled(f"{_NOT_OURS}: {flag.head[:_SHOWN_BYTES]!r}")
    return flag_error(flag.head)


def flag_error(raw: bytes | str) -> StiError:
    try:
        data = json.loads(raw)
        code, message = data["code"], data["message"]
    except (ValueError, TypeError, KeyError):  # not JSON, not an object, a field missing
        code = message = None
    error_type = CODES.get(code) if isinstance(code, str) else None
    if error_type is None or not _one_line(message):
        return Cancelled(f"{_NOT_OURS}: {raw[:_SHOWN_BYTES]!r}")
    return error_type(message)


def _one_line(message: object) -> bool:
    return (
        isinstance(message, str)
        and 0 < len(message) <= MESSAGE_CHARS
        and message.isprintable()
        and message == message.strip()
    )
