"""Cancelling a build: a flag in Redis the client sets and the worker reads between and during
steps. The flag carries the error the build ends with (Cancelled, or TimedOut for a client's
deadline)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from . import keys
from .errors import Cancelled, StiError, error_class

if TYPE_CHECKING:
    from .redis_wire import RedisClient


def request_cancel(
    client: RedisClient, build_id: str, code: str, message: str, expires_s: int
) -> None:
    client.set(
        keys.cancel_flag(build_id), json.dumps({"code": code, "message": message}), ex=expires_s
    )


def cancel_requested(client: RedisClient, build_id: str) -> StiError | None:
    raw = client.get(keys.cancel_flag(build_id))
    if raw is None:
        return None
    data = json.loads(raw)
    error_type = error_class(data.get("code", Cancelled.code))
    return error_type(data.get("message") or "the build was cancelled")
