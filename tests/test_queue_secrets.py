"""A source URL with credentials (`https://user:token@host/...`): the worker uses them, and
neither the CLI's output, the result object, `sti-submit logs` nor the worker's log shows them,
and nothing in Redis holds them once the build ended."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from tests.queue_helpers import json_result, make_source, sti_submit, tar_gz_of
from tests.services import Worker

SECRET = "tok3n-s3cret"


@pytest.mark.parametrize("exists", [True, False], ids=["fetched", "missing"])
def test_credentials_in_a_source_url_are_shown_nowhere(
    worker: Worker,
    broker_url: str,
    images: dict[str, str],
    app_tag: str,
    http_server: tuple[str, Path],
    tmp_path: Path,
    exists: bool,
) -> None:
    base, root = http_server
    if exists:
        (root / "app.tar.gz").write_bytes(tar_gz_of(make_source(tmp_path)))
    url = base.replace("http://", f"http://builder:{SECRET}@") + "/app.tar.gz"
    done = sti_submit("build", url, images["sti-fake"], app_tag, "--broker", broker_url, "--json")
    result = json_result(done)
    assert result["success"] is exists, result
    logs = sti_submit("logs", result["build_id"], "--broker", broker_url)
    assert logs.returncode == 0
    shown = {
        "CLI output": done.stdout + done.stderr,
        "sti-submit logs": logs.stdout + logs.stderr,
        "worker log": worker.log(),
    }
    assert {where: SECRET in text for where, text in shown.items()} == dict.fromkeys(shown, False)
    assert "builder:" not in done.stdout
    assert keys_holding(broker_url, SECRET.encode()) == []


def keys_holding(url: str, secret: bytes, settle_s: float = 5) -> list[str]:
    """Keys of the broker's database that hold secret once the build ended (a message being
    acknowledged may hold it for a moment)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + settle_s
    try:
        while True:
            found = [key.decode() for key in client.scan_iter() if secret in value_of(client, key)]
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
    finally:
        client.close()


def value_of(client: redis.Redis, key: bytes) -> bytes:
    """Everything a key holds, as one byte string."""
    kind = client.type(key)
    if kind == b"string":
        return client.get(key) or b""
    if kind == b"hash":
        return b"".join(k + v for k, v in client.hgetall(key).items())
    if kind == b"list":
        return b"".join(client.lrange(key, 0, -1))
    if kind == b"set":
        return b"".join(client.smembers(key))
    if kind == b"zset":
        return b"".join(client.zrange(key, 0, -1))
    if kind == b"stream":
        return b"".join(
            b"".join(k + v for k, v in fields.items()) for _, fields in client.xrange(key)
        )
    return b""
