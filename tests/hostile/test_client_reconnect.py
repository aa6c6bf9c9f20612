"""sti-submit's Redis client across a broker restart, and Redis URLs it must refuse: a client
kept open (the Python API, a long `logs --follow`) sends its next command, a write included, on a
fresh connection instead of failing on the socket the old server closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sti.errors import InvalidInput
from sti.redis_wire import LiteRedis, RedisAddress
from tests.services import RedisServer


def test_a_client_kept_open_writes_after_the_broker_restarted(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    client = LiteRedis(server.url())
    try:
        assert client.ping()
        server.restart(down_s=0.2)
        assert client.lpush("sti-test:after-restart", b"x") == 1  # not retried: sent once
        assert client.ping()
    finally:
        client.close()
        server.stop()


def test_a_live_idle_connection_is_kept(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    client = LiteRedis(server.url())
    try:
        client.set("sti-test:k", b"v")
        before = client._connection._socket
        assert client.get("sti-test:k") == b"v"
        assert client._connection._socket is before
    finally:
        client.close()
        server.stop()


@pytest.mark.parametrize(
    "url",
    ["redis://h:0/0", "redis://h/-1", "redis://h/?db=-2", "rediss://h:0", "redis://h:65536/0"],
)
def test_a_port_or_database_out_of_range_is_refused(url: str) -> None:
    with pytest.raises(InvalidInput, match=r"port 0|is negative|not a valid"):
        RedisAddress.from_url(url)
