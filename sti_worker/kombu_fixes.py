"""A fix to kombu's Redis transport (5.7) without which a broker restart stops a worker that
has a build running and a slot free.

When the broker connection breaks, Celery's consumer closes it twice: Connection.collect()
(for Redis: close the channels, then detach the transport from the connection) and then
Connection.close(). A channel with a BRPOP in flight (it had a slot free) first reads that
BRPOP's reply in Channel.close; on a dead socket the read raises, and the close ends there,
before the channel is marked closed. The second close then finishes it on the detached
transport, and putting the running build step's unacknowledged message back needs a new
connection pool, whose host it reads from the detached connection:
AttributeError("'NoneType' object has no attribute 'hostname'"), which neither kombu nor
Celery take for a connection error ("Unrecoverable error": the worker exits). The step's
acknowledgement later fails the same way. A worker of one slot never has that BRPOP in flight
while it runs a step, so it closes the channel in one go and rides the restart out.

The fix: a failed read of the pending reply does not stop the close (there is nothing left to
read on a dead connection), so a channel is closed in one go whatever its slots.
"""

from __future__ import annotations

from collections.abc import Callable
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis

_kombu_close: Callable[[Any], None] = kombu_redis.Channel.close


def _close_even_if_the_pending_read_fails(channel: Any) -> None:
    if channel._in_poll and not channel.closed:
        try:
            channel._brpop_read()  # kombu's close reads it too, but lets a dead socket end it
        except (Empty, *channel.connection_errors):
            pass
    _kombu_close(channel)


def apply() -> None:
    kombu_redis.Channel.close = _close_even_if_the_pending_read_fails
