"""LiteRedis, the submit side's RESP2 client: the same answers as redis-py, byte for byte, and
BrokerUnreachable (never a write sent twice) when the broker refuses, is away or drops it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from sti import redis_wire
from sti.errors import BrokerUnreachable, InvalidInput
from sti.redis_tls import TlsSettings, for_redis_py
from sti.redis_wire import BrokerRefused, ConnectionLost, LiteRedis, RedisAddress
from tests.services import free_port

Client = redis.Redis | LiteRedis


class Names:
    """Key names of one test run: the same label gives the same key, under a prefix of its own;
    every key handed out is deleted at the end."""

    def __init__(self) -> None:
        self.prefix = f"unit-test/wire-{uuid.uuid4().hex}"
        self.issued: set[str] = set()

    def __call__(self, label: str) -> str:
        name = f"{self.prefix}/{label}"
        self.issued.add(name)
        return name


@pytest.fixture
def names(redis_client: redis.Redis) -> Iterator[Callable[[], Names]]:
    made: list[Names] = []

    def new() -> Names:
        made.append(Names())
        return made[-1]

    yield new
    issued = [name for run in made for name in run.issued]
    if issued:
        redis_client.delete(*issued)


@pytest.fixture
def lite(broker_url: str) -> Iterator[LiteRedis]:
    client = LiteRedis(broker_url)
    yield client
    client.close()


@pytest.fixture
def no_retry_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_wire, "_RETRY_PAUSE_S", 0)


def typed(value: Any) -> Any:
    """value as a tree that compares the types of every part, not only their values."""
    if isinstance(value, dict):
        return ("dict", sorted((typed(k), typed(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return (type(value).__name__, sorted(typed(item) for item in value))
    if isinstance(value, list | tuple):
        return (type(value).__name__, [typed(item) for item in value])
    return (type(value).__name__, value)


def renamed(value: Any, old: str, new: str) -> Any:
    """value with the key prefix old replaced by new in every bytes and str of it."""
    if isinstance(value, bytes):
        return value.replace(old.encode(), new.encode())
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {renamed(k, old, new): renamed(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return type(value)(renamed(item, old, new) for item in value)
    return value


Seed = Callable[[redis.Redis, Names], Any]
Call = Callable[[Any, redis.Redis, Names], Any]


def nothing(r: redis.Redis, k: Names) -> None:
    return None


def stream(r: redis.Redis, k: Names) -> None:
    r.xadd(k("s"), {"f": "1", "g": b"\x00\xff"}, id="1-1")
    r.xadd(k("s"), {"f": "2"}, id="1-2")
    r.xadd(k("s"), {"f": "3"}, id="2-1")
    r.xadd(k("t"), {"only": "one"}, id="5-0")


PARITY: dict[str, tuple[Seed, Call]] = {
    "ping": (nothing, lambda c, r, k: c.ping()),
    "get a missing key": (nothing, lambda c, r, k: c.get(k("a"))),
    "get a value": (lambda r, k: r.set(k("a"), b"v\x00"), lambda c, r, k: c.get(k("a"))),
    "set": (nothing, lambda c, r, k: (c.set(k("a"), "v"), r.get(k("a")), r.ttl(k("a")))),
    "set over a value": (
        lambda r, k: r.set(k("a"), "old"),
        lambda c, r, k: (c.set(k("a"), b"new"), r.get(k("a"))),
    ),
    "set numbers": (
        nothing,
        lambda c, r, k: (c.set(k("a"), 12), c.get(k("a")), c.set(k("b"), 1.5), c.get(k("b"))),
    ),
    "set ex": (
        nothing,
        lambda c, r, k: (c.set(k("a"), "v", ex=100), 90 < r.ttl(k("a")) <= 100),
    ),
    "set px": (
        nothing,
        lambda c, r, k: (c.set(k("a"), "v", px=100_000), 90_000 < r.pttl(k("a")) <= 100_000),
    ),
    "set nx that wins": (
        nothing,
        lambda c, r, k: (c.set(k("a"), "v", nx=True, px=60_000), r.get(k("a"))),
    ),
    "set nx that loses": (
        lambda r, k: r.set(k("a"), "old"),
        lambda c, r, k: (c.set(k("a"), "new", nx=True, ex=60), r.get(k("a")), r.ttl(k("a"))),
    ),
    "delete": (
        lambda r, k: r.mset({k("a"): 1, k("b"): 2}),
        lambda c, r, k: (c.delete(k("a"), k("b"), k("missing")), r.exists(k("a"), k("b"))),
    ),
    "delete a missing key": (nothing, lambda c, r, k: c.delete(k("missing"))),
    "exists with several names": (
        lambda r, k: r.mset({k("a"): 1, k("b"): 2}),
        lambda c, r, k: (c.exists(k("a"), k("a"), k("b"), k("missing")), c.exists(k("none"))),
    ),
    "expire": (
        lambda r, k: r.set(k("a"), "v"),
        lambda c, r, k: (c.expire(k("a"), 50), 40 < r.ttl(k("a")) <= 50),
    ),
    "expire a missing key": (nothing, lambda c, r, k: c.expire(k("missing"), 50)),
    "rename": (
        lambda r, k: r.set(k("a"), "v"),
        lambda c, r, k: (c.rename(k("a"), k("b")), r.get(k("a")), r.get(k("b"))),
    ),
    "lpush": (
        lambda r, k: r.rpush(k("l"), "first"),
        lambda c, r, k: (c.lpush(k("l"), "a", b"b", 3), r.lrange(k("l"), 0, -1)),
    ),
    "hget": (
        lambda r, k: r.hset(k("h"), "f", "v"),
        lambda c, r, k: (c.hget(k("h"), "f"), c.hget(k("h"), "missing"), c.hget(k("no"), "f")),
    ),
    "hgetall": (
        lambda r, k: r.hset(k("h"), mapping={"f": "1", "g": b"\xff"}),
        lambda c, r, k: (c.hgetall(k("h")), c.hgetall(k("missing"))),
    ),
    "hset a field": (
        lambda r, k: r.hset(k("h"), "old", "1"),
        lambda c, r, k: (c.hset(k("h"), "f", "v"), c.hset(k("h"), "f", 2), r.hgetall(k("h"))),
    ),
    "hset a mapping": (
        lambda r, k: r.hset(k("h"), "old", "1"),
        lambda c, r, k: (
            c.hset(k("h"), mapping={"old": "2", "size": 10, "chunks": 1}),
            r.hgetall(k("h")),
        ),
    ),
    "hset a field and a mapping": (
        nothing,
        lambda c, r, k: (c.hset(k("h"), "f", "v", mapping={"g": "w"}), r.hgetall(k("h"))),
    ),
    "smembers": (
        lambda r, k: r.sadd(k("s"), "a", "b", b"\x00"),
        lambda c, r, k: (c.smembers(k("s")), c.smembers(k("missing"))),
    ),
    "zrangebyscore": (
        lambda r, k: r.zadd(k("z"), {"a": 1, "b": 2.5, "c": 10}),
        lambda c, r, k: (
            c.zrangebyscore(k("z"), 2, "+inf"),
            c.zrangebyscore(k("z"), "-inf", "+inf"),
            c.zrangebyscore(k("z"), "(1", 10),
            c.zrangebyscore(k("z"), 1.5, 2.5),
            c.zrangebyscore(k("missing"), "-inf", "+inf"),
        ),
    ),
    "xread": (stream, lambda c, r, k: c.xread({k("s"): "0"})),
    "xread with count": (stream, lambda c, r, k: c.xread({k("s"): "0"}, count=2)),
    "xread after an id": (stream, lambda c, r, k: c.xread({k("s"): "1-1"}, count=10)),
    "xread of two streams": (stream, lambda c, r, k: c.xread({k("s"): "1-2", k("t"): 0})),
    "xread with block and entries": (
        stream,
        lambda c, r, k: c.xread({k("s"): "0"}, count=1, block=1000),
    ),
    "xread of nothing new": (stream, lambda c, r, k: c.xread({k("s"): "2-1"})),
    "xread of a missing stream": (nothing, lambda c, r, k: c.xread({k("s"): "0"})),
    "xread with a block that times out": (
        stream,
        lambda c, r, k: c.xread({k("s"): "$", k("missing"): "$"}, block=50),
    ),
}


@pytest.mark.parametrize(("seed", "call"), PARITY.values(), ids=PARITY.keys())
def test_lite_redis_answers_as_redis_py(
    lite: LiteRedis,
    redis_client: redis.Redis,
    names: Callable[[], Names],
    seed: Seed,
    call: Call,
) -> None:
    answers = []
    for client in (lite, redis_client):
        k = names()
        seed(redis_client, k)
        answers.append((k.prefix, call(client, redis_client, k)))
    (lite_prefix, from_lite), (py_prefix, from_py) = answers
    assert typed(renamed(from_lite, lite_prefix, py_prefix)) == typed(from_py)


def test_xread_gives_entries_as_stream_then_id_and_fields(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    redis_client.xadd(k("s"), {"line": "hello"}, id="7-1")
    assert lite.xread({k("s"): "0"}, count=5) == [
        [k("s").encode(), [(b"7-1", {b"line": b"hello"})]]
    ]


def test_a_blocking_xread_waits_for_about_its_block_then_gives_nothing(
    lite: LiteRedis, names: Callable[[], Names]
) -> None:
    k = names()
    started = time.monotonic()
    assert lite.xread({k("s"): "$"}, block=200) == []
    assert 0.15 < time.monotonic() - started < 1.5


def queue_the_same(pipe: Any, k: Names) -> Any:
    pipe.set(k("a"), "v")
    pipe.set(k("b"), b"w", ex=60)
    pipe.set(k("a"), "again", nx=True)
    pipe.expire(k("a"), 30)
    pipe.expire(k("missing"), 30)
    pipe.rename(k("b"), k("c"))
    pipe.hset(k("h"), "f", "1")
    pipe.hset(k("h"), mapping={"f": "2", "g": 3})
    pipe.sadd(k("s"), "x", "y", "x")
    pipe.hdel(k("h"), "g", "missing")
    pipe.zadd(k("z"), {"m": 1, "n": 2.5})
    pipe.zrem(k("z"), "m", "missing")
    return pipe


@pytest.mark.parametrize("transaction", [False, True], ids=["plain", "transaction"])
def test_a_pipeline_answers_as_redis_pys(
    lite: LiteRedis,
    redis_client: redis.Redis,
    names: Callable[[], Names],
    transaction: bool,
) -> None:
    lite_pipe = queue_the_same(lite.pipeline(transaction=transaction), names())
    py_pipe = queue_the_same(redis_client.pipeline(transaction=transaction), names())
    assert len(lite_pipe) == len(py_pipe) == 12
    from_lite = lite_pipe.execute()
    assert typed(from_lite) == typed(py_pipe.execute())
    assert from_lite == [True, True, None, True, False, True, 1, 1, 2, 1, 2, 1]
    assert len(lite_pipe) == 0
    assert lite_pipe.execute() == py_pipe.execute() == []


def test_a_pipeline_stores_what_it_queued(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    queue_the_same(lite.pipeline(), k).execute()
    assert redis_client.get(k("a")) == b"v"
    assert redis_client.get(k("c")) == b"w"
    assert not redis_client.exists(k("b"))
    assert redis_client.hgetall(k("h")) == {b"f": b"2"}
    assert redis_client.smembers(k("s")) == {b"x", b"y"}
    assert redis_client.zrange(k("z"), 0, -1, withscores=True) == [(b"n", 2.5)]


def test_a_reset_pipeline_sends_nothing(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    pipe = lite.pipeline()
    pipe.set(k("a"), "v").expire(k("a"), 10)
    assert len(pipe) == 2
    pipe.reset()
    assert len(pipe) == 0
    assert pipe.execute() == []
    assert not redis_client.exists(k("a"))


@pytest.mark.parametrize("transaction", [False, True], ids=["plain", "transaction"])
def test_an_error_reply_in_a_pipeline_raises_broker_refused_and_keeps_the_connection_usable(
    lite: LiteRedis,
    redis_client: redis.Redis,
    names: Callable[[], Names],
    transaction: bool,
) -> None:
    k = names()
    pipe = lite.pipeline(transaction=transaction)
    pipe.set(k("a"), "v").rename(k("missing"), k("b")).set(k("c"), "w")
    with pytest.raises(BrokerRefused, match="no such key") as caught:
        pipe.execute()
    assert caught.value.reply.startswith("ERR")
    assert isinstance(caught.value, BrokerUnreachable)
    assert len(pipe) == 0
    assert redis_client.mget(k("a"), k("b"), k("c")) == [b"v", None, b"w"]
    assert lite.get(k("a")) == b"v"
    assert lite.ping() is True


def test_a_wrong_type_in_a_transaction_raises_broker_refused(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    redis_client.set(k("a"), "string")
    pipe = lite.pipeline(transaction=True)
    pipe.hset(k("a"), "f", "v").sadd(k("s"), "x")
    with pytest.raises(BrokerRefused, match="WRONGTYPE"):
        pipe.execute()
    assert lite.get(k("a")) == b"string"


def test_an_error_reply_to_a_command_raises_broker_refused(
    lite: LiteRedis, names: Callable[[], Names]
) -> None:
    k = names()
    with pytest.raises(BrokerRefused, match="no such key"):
        lite.rename(k("missing"), k("b"))
    lite.set(k("a"), "v")
    with pytest.raises(BrokerRefused, match="WRONGTYPE"):
        lite.hget(k("a"), "f")
    assert lite.get(k("a")) == b"v"


def script_text() -> str:
    return (
        f"-- {uuid.uuid4().hex}\n"
        "redis.call('set', KEYS[1], ARGV[1])\n"
        "return {redis.call('get', KEYS[1]), tonumber(ARGV[2]) + 1, "
        "redis.call('exists', KEYS[2]), false, 'text'}"
    )


def test_a_script_not_yet_loaded_runs_by_eval_then_by_its_sha(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    text = script_text()
    sha = hashlib.sha1(text.encode()).hexdigest()
    script = lite.register_script(text)
    assert redis_client.script_exists(sha) == [False]
    first = script(keys=[k("a"), k("missing")], args=[b"v\x00", 41])
    assert redis_client.script_exists(sha) == [True]
    second = script(keys=[k("a"), k("a")], args=["w", 1])
    py_script = redis_client.register_script(script_text())
    k2 = names()
    assert typed(first) == typed(py_script(keys=[k2("a"), k2("missing")], args=[b"v\x00", 41]))
    assert typed(second) == typed(py_script(keys=[k2("a"), k2("a")], args=["w", 1]))
    assert first == [b"v\x00", 42, 0, None, b"text"]
    assert second == [b"w", 2, 1, None, b"text"]


def test_a_script_error_raises_broker_refused(lite: LiteRedis) -> None:
    script = lite.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.error_reply('NOPE no')")
    with pytest.raises(BrokerRefused, match="NOPE no"):
        script()
    with pytest.raises(BrokerRefused, match="NOPE no"):
        script()
    assert lite.ping() is True


INJECTIONS = [
    b"line\r\nbreak",
    b"*1\r\n$8\r\nFLUSHALL\r\n",
    b"\r\n*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\ny\r\n",
    b"$-1\r\n",
    b"-ERR fake\r\n",
    b"+OK\r\n",
    b"nul\x00byte\x00",
    b"\xff\xfe\x80 not utf-8 \xc3\x28",
    b"",
    b"\r\n",
]


@pytest.mark.parametrize("payload", INJECTIONS, ids=range(len(INJECTIONS)))
def test_keys_and_values_round_trip_exactly_and_touch_no_other_key(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names], payload: bytes
) -> None:
    k = names()
    redis_client.set(k("sentinel"), "still here")
    target = k("injected").encode()
    smuggled = b"\r\n*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\ny\r\n" % (len(target), target)
    key = k("key").encode() + payload
    try:
        assert lite.set(key, payload) is True
        assert lite.get(key) == payload
        assert redis_client.get(key) == payload
        assert lite.hset(k("h"), payload, payload + smuggled) == 1
        assert lite.hgetall(k("h")) == {payload: payload + smuggled}
        assert lite.lpush(k("l"), payload, smuggled + payload) == 2
        assert redis_client.lrange(k("l"), 0, -1) == [smuggled + payload, payload]
        assert lite.exists(key, k("sentinel")) == 2
    finally:
        redis_client.delete(key)
    assert redis_client.get(k("sentinel")) == b"still here"
    assert redis_client.exists(target) == 0


def test_text_keys_and_values_are_sent_as_utf8(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    key = k("ключ-é-😀\r\n")
    assert lite.set(key, "valeur-ü-😀\x00") is True
    assert redis_client.get(key.encode()) == "valeur-ü-😀\x00".encode()
    assert lite.get(key) == "valeur-ü-😀\x00".encode()


def test_a_two_mebibyte_random_value_round_trips(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    value = os.urandom(2 * 1024 * 1024)
    assert lite.set(k("big"), value, ex=60) is True
    assert lite.get(k("big")) == value
    assert redis_client.get(k("big")) == value
    assert lite.pipeline().set(k("copy"), value).execute() == [True]
    assert redis_client.strlen(k("copy")) == len(value)


UNSENDABLE = [{"a": 1}, None, True, False, [b"x"], (1,), object(), b"ok".decode]


@pytest.mark.parametrize("value", UNSENDABLE, ids=lambda value: type(value).__name__)
def test_an_unsupported_argument_raises_type_error_before_anything_is_sent(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names], value: Any
) -> None:
    k = names()
    assert lite.set(k("before"), "v") is True
    with pytest.raises(TypeError):
        lite.set(k("a"), value)
    with pytest.raises(TypeError):
        lite.hset(k("h"), mapping={"f": "ok", "g": value})
    with pytest.raises(TypeError):
        lite.lpush(k("l"), "ok", value)
    with pytest.raises(TypeError):
        lite.pipeline().set(k("p"), "ok").set(k("q"), value).execute()
    assert redis_client.exists(k("a"), k("h"), k("l"), k("p"), k("q")) == 0
    assert lite.get(k("before")) == b"v"
    assert lite.ping() is True


ADDRESSES: dict[str, dict[str, Any]] = {
    "redis://host": {"host": "host", "port": 6379, "db": 0, "password": None, "tls": False},
    "redis://:pw@host:7000/3": {
        "host": "host",
        "port": 7000,
        "db": 3,
        "username": None,
        "password": "pw",
    },
    "redis://user:p%40ss@host/2": {
        "host": "host",
        "db": 2,
        "username": "user",
        "password": "p@ss",
    },
    "redis://host/?db=5": {"host": "host", "db": 5},
    "redis://127.0.0.1:6380/0": {"host": "127.0.0.1", "port": 6380, "db": 0},
    "rediss://host": {"host": "host", "tls": True, "verify_tls": True},
    "rediss://host?ssl_cert_reqs=none": {"host": "host", "tls": True, "verify_tls": False},
    "rediss://host:6390/1?ssl_cert_reqs=CERT_NONE": {"port": 6390, "db": 1, "verify_tls": False},
    "unix:///run/redis.sock?db=4": {"path": "/run/redis.sock", "db": 4, "host": None},
    "redis+socket:///run/redis.sock": {"path": "/run/redis.sock", "db": 0, "host": None},
    "unix://:pw@/run/redis.sock": {"path": "/run/redis.sock", "password": "pw", "host": None},
}


@pytest.mark.parametrize(("url", "expected"), ADDRESSES.items(), ids=ADDRESSES.keys())
def test_a_redis_url_gives_its_address(url: str, expected: dict[str, Any]) -> None:
    address = RedisAddress.from_url(url)
    assert {field: getattr(address, field) for field in expected} == expected
    assert address.url == url


def test_the_safe_url_masks_the_credentials() -> None:
    address = RedisAddress.from_url("redis://user:p%40ss@host:7000/2")
    assert address.safe_url == "redis://***@host:7000/2"


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        ("ssl_password=k3y@pass&ssl_certfile=/c.pem", "ssl_password=***&ssl_certfile=/c.pem"),
        ("ssl_certfile=/c.pem&ssl%5Fpassword=k3y", "ssl_certfile=/c.pem&ssl%5Fpassword=***"),
        ("ssl_certfile=/c.pem&ssl_password=k3y#x", "ssl_certfile=/c.pem&ssl_password=***#x"),
    ],
)
def test_the_safe_url_masks_the_key_passphrase(query: str, shown: str) -> None:
    address = RedisAddress.from_url(f"rediss://user:pw@host:7000/2?{query}")
    assert address.safe_url == f"rediss://***@host:7000/2?{shown}"
    assert address.tls_settings is not None and address.tls_settings.password
    assert address.tls_settings.password not in repr(address.tls_settings)


def test_a_rediss_url_gives_the_tls_settings_redis_py_would_use() -> None:
    address = RedisAddress.from_url(
        "rediss://h/0?ssl_cert_reqs=CERT_OPTIONAL&ssl_ca_certs=/ca.pem&ssl_check_hostname=FALSE"
        "&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_password=a+b%2Bc&ssl_ciphers=HIGH"
    )
    assert address.tls_settings == TlsSettings(
        cert_reqs="optional",
        check_hostname=False,
        ca_certs="/ca.pem",
        certfile="/c.pem",
        keyfile="/k.pem",
        password="a b+c",  # decoded once, as redis-py and kombu decode it
        ciphers="HIGH",
    )
    assert RedisAddress.from_url("rediss://h").tls_settings == TlsSettings()
    assert RedisAddress.from_url("redis://h").tls_settings is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rediss://h/0?ssl_cert_reqs=CERT_REQUIRED&ssl_ca_certs=/a%20b.pem", None),
        ("rediss://h/0?ssl_cert_reqs=CERT_NONE", "rediss://h/0?ssl_cert_reqs=none"),
        (
            "rediss://:pw@h/0?x=1&ssl%5Fcert_reqs=CERT_OPTIONAL",
            "rediss://:pw@h/0?x=1&ssl_cert_reqs=optional",
        ),
        ("rediss://h/0?ssl_cert_reqs=required", "rediss://h/0?ssl_cert_reqs=required"),
        ("redis://h/0", "redis://h/0"),
    ],
)
def test_the_workers_redis_py_reads_celerys_cert_reqs_spelling(
    url: str, expected: str | None
) -> None:
    spelled = for_redis_py(url)
    if expected is not None:
        assert spelled == expected
    parsed = redis.connection.parse_url(spelled)
    assert parsed.get("ssl_cert_reqs", "required") in ("required", "optional", "none")
    if "ssl_ca_certs" in url:
        assert parsed["ssl_ca_certs"] == "/a b.pem"


REFUSED = [
    "http://host",
    "https://user:secret@host/0",
    "amqp://user:secret@host",
    "sentinel://:secret@host:26379",
    "redis-sentinel://host",
    "redis://host:notaport",
    "redis://:secret@host:notaport",
    "redis://host:99999",
    "redis://host/notadb",
    "redis://user:secret@host/notadb",
    "redis://user:secret@host/?db=x",
    "unix://:secret@/run/redis.sock?db=nope",
    "redis://user:se/cret-secret@host:6379/0",  # a "/" in the password: not where redaction looks
    "redis://user:a#secret@host:6379/0",
    "redis://user:secret@[::1",  # not a URL at all
    "rediss://user:secret@host/0?ssl_cert_reqs=Required",
    "rediss://user:secret@host/0?ssl_ca_certs=/a.pem&ssl_ca_certs=/b.pem",
    "redis://user:secret@host/0?ssl_cert_reqs=none",
]


@pytest.mark.parametrize("url", REFUSED)
def test_a_url_that_is_not_redis_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        RedisAddress.from_url(url)
    assert "secret" not in str(caught.value)
    assert "secret" not in caught.value.message
    with pytest.raises(InvalidInput):
        LiteRedis(url)


@pytest.fixture
def acl_user(redis_client: redis.Redis) -> Iterator[tuple[str, str]]:
    name = f"unit-test-wire-{uuid.uuid4().hex[:12]}"
    secret = f"s3cr@t:/{uuid.uuid4().hex}"
    redis_client.acl_setuser(
        name, enabled=True, passwords=["+" + secret], keys=["*"], commands=["+@all"]
    )
    try:
        yield name, secret
    finally:
        redis_client.acl_deluser(name)


def port_of(url: str) -> int:
    port = RedisAddress.from_url(url).port
    assert port is not None
    return port


def test_a_user_and_password_in_the_url_log_in(
    broker_url: str,
    redis_client: redis.Redis,
    names: Callable[[], Names],
    acl_user: tuple[str, str],
) -> None:
    name, secret = acl_user
    k = names()
    lite = LiteRedis(f"redis://{name}:{quote(secret, safe='')}@127.0.0.1:{port_of(broker_url)}/0")
    try:
        assert lite.ping() is True
        assert lite.execute_command("ACL", "WHOAMI") == name.encode()
        assert lite.set(k("a"), "by acl user") is True
        assert lite.get(k("a")) == b"by acl user"
        assert redis_client.get(k("a")) == b"by acl user"
    finally:
        lite.close()


def test_a_wrong_password_is_refused_without_showing_it(
    broker_url: str, acl_user: tuple[str, str]
) -> None:
    name, secret = acl_user
    wrong = f"wrong-{uuid.uuid4().hex}"
    lite = LiteRedis(f"redis://{name}:{wrong}@127.0.0.1:{port_of(broker_url)}/0")
    try:
        with pytest.raises(BrokerRefused) as caught:
            lite.ping()
        message = str(caught.value)
        assert "WRONGPASS" in message or "invalid username-password" in message
        assert wrong not in message
        assert wrong not in caught.value.message
        assert secret not in message
        assert "***@127.0.0.1" in message
        with pytest.raises(BrokerRefused):
            lite.get("anything")
    finally:
        lite.close()


def test_the_db_of_the_url_is_selected(
    broker_url: str, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    k = names()
    url = f"redis://127.0.0.1:{port_of(broker_url)}/7"
    lite = LiteRedis(url)
    db7 = redis.Redis.from_url(url)
    try:
        assert lite.set(k("a"), "in db 7") is True
        assert db7.get(k("a")) == b"in db 7"
        assert redis_client.exists(k("a")) == 0
        assert lite.get(k("a")) == b"in db 7"
    finally:
        db7.delete(k("a"))
        db7.close()
        lite.close()


def test_an_unreachable_broker_fails_at_once_with_the_password_masked() -> None:
    port = free_port()
    lite = LiteRedis(f"redis://:topsecret@127.0.0.1:{port}/0")
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as caught:
        lite.ping()
    assert time.monotonic() - started < 0.5
    assert isinstance(caught.value, BrokerUnreachable)
    assert f"redis://***@127.0.0.1:{port}/0" in str(caught.value)
    assert "topsecret" not in str(caught.value)


def test_a_write_to_an_unreachable_broker_is_tried_once() -> None:
    lite = LiteRedis(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(ConnectionLost):
        lite.lpush("queue", "message")
    assert time.monotonic() - started < 0.5


def test_a_read_from_an_unreachable_broker_is_tried_three_times(
    monkeypatch: pytest.MonkeyPatch, no_retry_pause: None
) -> None:
    lite = LiteRedis(f"redis://127.0.0.1:{free_port()}/0")
    attempts: list[int] = []
    connect = lite._connection._ensure_connected

    def counted() -> None:
        attempts.append(1)
        connect()

    monkeypatch.setattr(lite._connection, "_ensure_connected", counted)
    with pytest.raises(ConnectionLost):
        lite.get("anything")
    assert len(attempts) == 3
    attempts.clear()
    with pytest.raises(ConnectionLost):
        lite.set("anything", "v")
    assert len(attempts) == 1


def kill_from_the_server(lite: LiteRedis, redis_client: redis.Redis) -> int:
    sock = lite._connection._socket
    assert sock is not None
    port = sock.getsockname()[1]
    (found,) = [c for c in redis_client.client_list() if c["addr"].endswith(f":{port}")]
    assert redis_client.client_kill_filter(_id=found["id"]) == 1
    return port


def test_a_read_after_the_server_dropped_the_connection_reconnects(
    lite: LiteRedis,
    redis_client: redis.Redis,
    names: Callable[[], Names],
    no_retry_pause: None,
) -> None:
    k = names()
    redis_client.set(k("a"), "v")
    assert lite.get(k("a")) == b"v"
    old_port = kill_from_the_server(lite, redis_client)
    assert lite.get(k("a")) == b"v"
    assert lite.hgetall(k("missing")) == {}
    assert lite._connection._socket is not None
    assert lite._connection._socket.getsockname()[1] != old_port


def test_a_write_after_the_server_dropped_the_connection_is_never_sent_twice(
    lite: LiteRedis,
    redis_client: redis.Redis,
    names: Callable[[], Names],
    no_retry_pause: None,
) -> None:
    k = names()
    assert lite.get(k("l")) is None
    kill_from_the_server(lite, redis_client)
    try:
        pushed = lite.lpush(k("l"), "build")
    except ConnectionLost as error:
        assert "cannot reach the broker" in str(error)
        assert redis_client.llen(k("l")) == 0
    else:
        assert pushed == 1
        assert redis_client.llen(k("l")) == 1
    before = redis_client.llen(k("l"))
    assert lite.lpush(k("l"), "next") == before + 1
    assert redis_client.llen(k("l")) == before + 1


def test_a_pipeline_after_the_server_dropped_the_connection_goes_once_on_a_fresh_one(
    lite: LiteRedis,
    redis_client: redis.Redis,
    names: Callable[[], Names],
) -> None:
    k = names()
    assert lite.ping() is True
    old_port = kill_from_the_server(lite, redis_client)
    pipe = lite.pipeline(transaction=True)
    pipe.set(k("a"), "v").sadd(k("s"), "x")
    pipe.execute()
    assert redis_client.get(k("a")) == b"v"
    assert redis_client.smembers(k("s")) == {b"x"}
    assert lite._connection._socket is not None
    assert lite._connection._socket.getsockname()[1] != old_port


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "r.sock"
    server = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(unix_socket_path=str(sock))
        deadline = time.monotonic() + 10
        while True:
            try:
                if sock.exists() and probe.ping():
                    break
            except redis.ConnectionError:
                pass
            assert server.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer on its socket"
            time.sleep(0.02)
        probe.close()
        yield sock
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_unix_socket_url_reaches_its_db(unix_socket: Path) -> None:
    lite = LiteRedis(f"unix://{unix_socket}?db=2")
    db2 = redis.Redis(unix_socket_path=str(unix_socket), db=2)
    db0 = redis.Redis(unix_socket_path=str(unix_socket), db=0)
    try:
        assert lite.ping() is True
        assert lite.set("k", b"over\r\nunix") is True
        assert lite.get("k") == b"over\r\nunix"
        assert db2.get("k") == b"over\r\nunix"
        assert db0.exists("k") == 0
    finally:
        lite.close()
        db2.close()
        db0.close()


def test_a_unix_socket_nobody_listens_on_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(ConnectionLost, match="cannot reach the broker"):
        LiteRedis(f"unix://{tmp_path / 'none.sock'}").ping()


def test_a_script_answering_a_status_gives_bytes_as_redis_py(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    text = f"-- {uuid.uuid4().hex}\nreturn redis.call('set', KEYS[1], ARGV[1])"
    ours = lite.register_script(text)(keys=[names()("a")], args=["v"])
    theirs = redis_client.register_script(text)(keys=[names()("a")], args=["v"])
    assert typed(ours) == typed(theirs) == typed(b"OK")


def test_a_field_in_both_key_and_mapping_gets_the_mappings_value(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    ours, theirs = names()("h"), names()("h")
    lite.hset(ours, "f", "kv", mapping={"f": "mv"})
    redis_client.hset(theirs, "f", "kv", mapping={"f": "mv"})
    assert redis_client.hget(ours, "f") == redis_client.hget(theirs, "f") == b"mv"


def test_an_empty_pipeline_is_truthy_as_redis_pys(lite: LiteRedis) -> None:
    assert bool(lite.pipeline()) is True


def test_text_that_cannot_be_encoded_fails_at_once_and_keeps_the_connection(
    lite: LiteRedis, names: Callable[[], Names]
) -> None:
    key = names()("a")
    lite.set(key, "before")
    started = time.monotonic()
    with pytest.raises(UnicodeEncodeError):
        lite.get("\ud800")
    assert time.monotonic() - started < 0.5
    assert lite.get(key) == b"before"


# large arguments: sent from where they are (gathered by sendmsg), not copied into the request


def _classic_encoding(command: tuple[Any, ...]) -> bytes:
    """RESP as the protocol spells it, one command in one piece."""
    parts = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in command]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


class _TricklingSocket:
    """Takes at most `room` bytes a call, as a socket whose send buffer is full does."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.received = bytearray()
        self.calls = 0

    def sendmsg(self, buffers: list[memoryview]) -> int:
        self.calls += 1
        taken = 0
        for buffer in buffers:
            piece = bytes(buffer[: self.room - taken])
            self.received += piece
            taken += len(piece)
            if taken == self.room:
                break
        return taken

    def sendall(self, data: bytes) -> None:
        self.received += data


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("room", [1, 1000, 1 << 30])
def test_a_request_sent_in_pieces_arrives_whole_and_in_order(
    monkeypatch: pytest.MonkeyPatch, gather: bool, room: int
) -> None:
    monkeypatch.setattr(redis_wire, "_IOV_MAX", 3)  # more buffers than one sendmsg takes
    big = os.urandom(redis_wire._OWN_BUFFER_BYTES)
    commands: list[tuple[Any, ...]] = [
        ("SET", "a", os.urandom(200_000), "EX", 60),
        ("SET", "b", b"x" * (len(big) - 1)),
        ("MSET", "c", big, "d", big[::-1], "e", b""),
        ("PING",),
    ]
    if room == 1:
        commands = [("SET", "a", os.urandom(70_000)), ("SET", "b", big)]
    sock = _TricklingSocket(room)
    buffers = redis_wire._request(commands)
    assert sum(buffer is big for buffer in buffers) == 1  # not copied
    redis_wire._send(sock, buffers, gather=gather)  # type: ignore[arg-type]
    assert bytes(sock.received) == b"".join(_classic_encoding(c) for c in commands)


def test_large_values_are_stored_byte_for_byte(
    lite: LiteRedis, redis_client: redis.Redis, names: Callable[[], Names]
) -> None:
    run = names()
    line = redis_wire._OWN_BUFFER_BYTES
    values = [os.urandom(3 * 1024 * 1024 + 17), os.urandom(line), os.urandom(line - 1), b"", b"s"]
    pipe = lite.pipeline(transaction=False)
    for number, value in enumerate(values):
        pipe.set(run(f"value-{number}"), value, ex=60)
    assert pipe.execute() == [True] * len(values)
    assert [redis_client.get(run(f"value-{n}")) for n in range(len(values))] == values
    assert lite.set(run("single"), values[0], ex=60)
    assert redis_client.get(run("single")) == values[0]
