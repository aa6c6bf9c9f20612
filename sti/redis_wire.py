"""A small Redis client for the submitting side: the commands sti-submit uses, in RESP2 over one
socket (TCP, TLS or a unix socket), answering as redis-py does for those commands.

Why not redis-py here: importing it costs about 0.25 s (it loads its asyncio client), half of a
whole `sti-submit build`. The workers keep redis-py (Celery needs it); the core modules
(blob store, cancel flags, leases) work with either.
"""

from __future__ import annotations

import hashlib
import re
import select
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

from .errors import BrokerUnreachable, InvalidInput
from .redaction import redact

Reply = Any
_RETRIES = 3  # reads survive a broker restart of a few seconds
_OWN_BUFFER_BYTES = 64 * 1024  # an argument this large is sent from where it is, not copied
_IOV_MAX = 1024  # buffers one sendmsg takes (Linux's IOV_MAX)
_RETRY_PAUSE_S = 1.0


class ConnectionLost(BrokerUnreachable):
    """The broker could not be reached, or the connection to it broke."""


class TlsRefused(BrokerUnreachable):
    """The TLS handshake's verdict on a certificate (the broker's not trusted, ours missing or
    refused): not tried again."""


class BrokerRefused(BrokerUnreachable):
    """The broker answered a command with an error (out of memory, wrong type, no script...)."""

    def __init__(self, reply: str) -> None:
        super().__init__(f"the broker refused a command: {reply}")
        self.reply = reply


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis URL points: redis://[user:password@]host[:port][/db], rediss://... (TLS,
    with the ssl_* arguments the workers take: sti/redis_tls.py), unix://[user:password@]/path
    [?db=N] (also redis+socket://)."""

    url: str
    host: str | None = None
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls_settings: TlsSettings | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        try:
            parts = urlsplit(url)
        except ValueError as error:
            raise InvalidInput(f"{_masked(url)} is not a valid Redis URL: {error}") from error
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix", "redis+socket"):
            raise InvalidInput(
                f"{_masked(url)} is not a Redis URL (redis://, rediss://, unix://): sti's broker "
                "and result backend are Redis"
            )
        query = _query_of(url, parts.query)
        unix = scheme in ("unix", "redis+socket")
        try:
            port = 6379 if parts.port is None else parts.port
            db = int(query.get("db") or ("" if unix else parts.path.strip("/")) or 0)
        except ValueError as error:
            raise InvalidInput(f"{_masked(url)} is not a valid Redis URL") from error
        if port == 0:  # read as "no port" (6379) by other clients
            raise InvalidInput(f"{_masked(url)} names port 0")
        if db < 0:
            raise InvalidInput(f"the database of {_masked(url)} is negative")
        return cls(
            url=url,
            # decoded, as the workers' clients decode it (and check TLS certificates for it)
            host=None if unix else (unquote(parts.hostname or "") or "localhost"),
            port=port,
            path=parts.path if unix else None,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls_settings=_tls_settings(url, scheme, query),
        )

    @property
    def tls(self) -> bool:
        return self.tls_settings is not None

    @property
    def verify_tls(self) -> bool:
        return self.tls_settings is not None and self.tls_settings.verifies

    @property
    def safe_url(self) -> str:
        return _masked(self.url)


def _query_of(url: str, query: str) -> dict[str, str]:
    """A URL's query, one value per name, decoded once as the workers' clients decode it; a name
    given twice is refused (redis-py takes its first value, kombu its last)."""
    found: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in found:
            raise InvalidInput(f"{_masked(url)}: {name} is given twice in the URL's query")
        found[name] = value
    return found


def _tls_settings(url: str, scheme: str, query: dict[str, str]) -> TlsSettings | None:
    """A rediss:// URL's TLS settings; TLS arguments in any other URL are refused (the workers'
    broker connection would use TLS for them, their result backend refuses them)."""
    arguments = {name: value for name, value in query.items() if _is_tls_argument(name)}
    if scheme != "rediss":
        if arguments:
            raise InvalidInput(
                f"{_masked(url)}: {', '.join(arguments)} needs a rediss:// (TLS) URL"
            )
        return None
    from .redis_tls import TlsSettings  # for TLS only: a plain URL does without it

    try:
        return TlsSettings.from_query(arguments)
    except InvalidInput as error:
        raise InvalidInput(f"{_masked(url)}: {error.message}") from error


def _is_tls_argument(name: str) -> bool:
    """Whether a query argument's name is meant for TLS, however it is spelled."""
    return name.strip().lower().replace("-", "_").startswith(("ssl", "tls"))


class RedisConnection:
    """One socket; any error closes it, and the next command connects again."""

    def __init__(
        self, address: RedisAddress, *, connect_timeout_s: float = 3, timeout_s: float = 30
    ) -> None:
        self.address = address
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._socket: socket.socket | None = None
        self._reader: Any = None
        self._tls_context: ssl.SSLContext | None = None

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = self._reader = None

    def execute(self, commands: Sequence[Sequence[Any]], *, block_s: float = 0) -> list[Reply]:
        """Send commands in one write, read one reply each; a reply that is an error is returned
        as BrokerRefused, not raised. block_s: how long the server may hold the replies."""
        request = _request(commands)
        fresh = self._socket is None
        try:
            self._ensure_connected()
            assert self._socket is not None
            self._socket.settimeout(self._timeout_s + block_s)
            _send(self._socket, request, gather=not self.address.tls)
            return [self._read_reply() for _ in commands]
        except (OSError, EOFError, ValueError) as error:
            told = self._alert_behind(error) if fresh else error
            self.close()
            raise self._failure(told, fresh=fresh) from error

    def _alert_behind(self, error: Exception) -> Exception:
        """The TLS alert a broker sent before closing, which says why: TLS 1.3 checks a client
        certificate after the handshake, so the first write can fail before the alert is read."""
        sock = self._socket
        if sock is None or not self.address.tls or not _closed_on_us(error):
            return error
        try:
            sock.settimeout(0.5)
            sock.recv(1)
        except OSError as alert:
            return alert if getattr(alert, "reason", None) else error
        return error

    def _failure(self, error: Exception, *, fresh: bool) -> BrokerUnreachable:
        """The error a broken exchange raises: TlsRefused for a handshake's verdict on a
        certificate, else ConnectionLost (reads are tried again)."""
        where = f"cannot reach the broker at {self.address.safe_url}"
        tls = self.address.tls_settings
        if tls is not None and isinstance(error, OSError):
            from .redis_tls import handshake_refusal

            verdict = handshake_refusal(error, tls)
            if verdict:
                return TlsRefused(f"{where}: {verdict}")
        reason = str(error) or type(error).__name__
        if fresh and tls is not None and not tls.certfile and _closed_on_us(error):
            reason += (
                " (a broker that asks for a client certificate closes a connection without one:"
                " give ssl_certfile and ssl_keyfile)"
            )
        return ConnectionLost(f"{where}: {reason}")

    def _ensure_connected(self) -> None:
        if self._socket is not None and _closed_while_idle(self._socket, tls=self.address.tls):
            self.close()  # the broker restarted since the last command: connect again
        if self._socket is not None:
            return
        address = self.address
        if address.tls_settings is not None and self._tls_context is None:
            self._tls_context = address.tls_settings.context()  # made once: it reads files
        if address.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._connect_timeout_s)
            try:
                sock.connect(address.path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection(
                (address.host, address.port), timeout=self._connect_timeout_s
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls_context is not None:
            sock = _wrap_tls(sock, self._tls_context, address.host)
        self._socket, self._reader = sock, sock.makefile("rb")
        self._log_in()

    def _log_in(self) -> None:
        address = self.address
        commands: list[list[Any]] = []
        if address.password is not None:
            login = [address.username] if address.username else []
            commands.append(["AUTH", *login, address.password])
        if address.db:
            commands.append(["SELECT", address.db])
        if not commands:
            return
        assert self._socket is not None
        _send(self._socket, _request(commands), gather=not address.tls)
        for reply in [self._read_reply() for _ in commands]:
            if isinstance(reply, BrokerRefused):
                self.close()
                raise BrokerRefused(f"{reply.reply} (logging in to {address.safe_url})")

    def _read_reply(self) -> Reply:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise EOFError("the connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            return BrokerRefused(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._reader.read(size + 2)
            if len(data) != size + 2:
                raise EOFError("the connection closed")
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self._read_reply() for _ in range(count)]
        raise ValueError(f"not a RESP reply: {line[:40]!r}")


def _closed_while_idle(sock: socket.socket, *, tls: bool) -> bool:
    """Whether the broker closed a socket that waits for no reply (a restart, an idle timeout):
    it reads at once, its end or stray bytes. Found before a command is sent, so that any
    command, not only a read that may be sent twice, goes out on a fresh connection."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        # TLS 1.3 session tickets make a live socket readable: reading them yields no data
        sock.recv(1) if tls else sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as error:
        return type(error).__name__ != "SSLWantReadError"
    finally:
        sock.settimeout(timeout)
    return True


class LiteRedis:
    """The redis-py methods sti's client and core modules call, with redis-py's return types
    (bytes, not str; True for OK). Reads are retried across a short broker outage; writes are
    sent once (a retried LPUSH could enqueue a build twice)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 3, timeout_s: float = 30) -> None:
        self.address = RedisAddress.from_url(url)
        self._connection = RedisConnection(
            self.address, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s
        )

    def close(self) -> None:
        self._connection.close()

    def execute_command(self, *args: Any, idempotent: bool = False, block_s: float = 0) -> Reply:
        attempts = _RETRIES if idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                reply = self._connection.execute([args], block_s=block_s)[0]
                break
            except ConnectionLost:
                if attempt == attempts:
                    raise
                time.sleep(_RETRY_PAUSE_S)
        if isinstance(reply, BrokerRefused):
            raise reply
        return reply

    def _read(self, *args: Any) -> Reply:
        return self.execute_command(*args, idempotent=True)

    def pipeline(self, transaction: bool = True) -> LitePipeline:
        return LitePipeline(self._connection, transaction=transaction)

    def register_script(self, script: str) -> Callable[..., Reply]:
        return LiteScript(self, script)

    # keys and strings

    def ping(self) -> bool:
        """Once, not retried: for telling at once whether the broker is there."""
        return self.execute_command("PING") == b"PONG"

    def get(self, name: str) -> bytes | None:
        return self._read("GET", name)  # type: ignore[no-any-return]

    def set(
        self,
        name: str,
        value: Any,
        ex: int | None = None,
        px: int | None = None,
        nx: bool = False,
    ) -> bool | None:
        return _ok(self.execute_command(*_set_args(name, value, ex, px, nx)))

    def delete(self, *names: str) -> int:
        return int(self.execute_command("DEL", *names))

    def exists(self, *names: str) -> int:
        return int(self._read("EXISTS", *names))

    def expire(self, name: str, seconds: int) -> bool:
        return bool(self.execute_command("EXPIRE", name, seconds))

    def rename(self, source: str, target: str) -> bool:
        return _ok(self.execute_command("RENAME", source, target)) is True

    def lpush(self, name: str, *values: Any) -> int:
        return int(self.execute_command("LPUSH", name, *values))

    # hashes, sets, sorted sets, streams

    def hget(self, name: str, key: str) -> bytes | None:
        return self._read("HGET", name, key)  # type: ignore[no-any-return]

    def hgetall(self, name: str) -> dict[bytes, bytes]:
        return _pairs(self._read("HGETALL", name))

    def hset(
        self,
        name: str,
        key: str | None = None,
        value: Any = None,
        mapping: Mapping[str, Any] | None = None,
    ) -> int:
        return int(self.execute_command(*_hset_args(name, key, value, mapping)))

    def smembers(self, name: str) -> set[bytes]:
        return set(self._read("SMEMBERS", name))

    def zrangebyscore(self, name: str, low: Any, high: Any) -> list[bytes]:
        return list(self._read("ZRANGEBYSCORE", name, low, high))

    def xread(
        self, streams: Mapping[str, Any], count: int | None = None, block: int | None = None
    ) -> list[list[Any]]:
        args: list[Any] = ["XREAD"]
        if count is not None:
            args += ["COUNT", count]
        if block is not None:
            args += ["BLOCK", block]
        args += ["STREAMS", *streams.keys(), *streams.values()]
        block_s = (block or 0) / 1000
        reply = self.execute_command(*args, idempotent=True, block_s=block_s)
        return [
            [stream, [(entry_id, _pairs(fields)) for entry_id, fields in entries]]
            for stream, entries in reply or ()
        ]


class LitePipeline:
    """Commands queued and sent in one write (MULTI/EXEC around them with transaction)."""

    def __init__(self, connection: RedisConnection, *, transaction: bool) -> None:
        self._connection = connection
        self._transaction = transaction
        self._commands: list[tuple[tuple[Any, ...], Callable[[Reply], Any]]] = []

    def __len__(self) -> int:
        return len(self._commands)

    def __bool__(self) -> bool:
        return True  # as redis-py's: an empty pipeline is still a pipeline

    def reset(self) -> None:
        self._commands = []

    def execute(self) -> list[Any]:
        queued, self._commands = self._commands, []
        if not queued:
            return []
        commands = [args for args, _ in queued]
        if self._transaction:
            replies = self._connection.execute([("MULTI",), *commands, ("EXEC",)])
            first_error = next((r for r in replies if isinstance(r, BrokerRefused)), None)
            if first_error is not None:
                raise first_error
            replies = replies[-1]
        else:
            replies = self._connection.execute(commands)
        for reply in replies:
            if isinstance(reply, BrokerRefused):
                raise reply
        return [convert(reply) for (_, convert), reply in zip(queued, replies, strict=True)]

    def _queue(self, convert: Callable[[Reply], Any], *args: Any) -> LitePipeline:
        self._commands.append((args, convert))
        return self

    def set(
        self, name: str, value: Any, ex: int | None = None, px: int | None = None, nx: bool = False
    ) -> LitePipeline:
        return self._queue(_ok, *_set_args(name, value, ex, px, nx))

    def expire(self, name: str, seconds: int) -> LitePipeline:
        return self._queue(bool, "EXPIRE", name, seconds)

    def rename(self, source: str, target: str) -> LitePipeline:
        return self._queue(_ok, "RENAME", source, target)

    def hset(
        self,
        name: str,
        key: str | None = None,
        value: Any = None,
        mapping: Mapping[str, Any] | None = None,
    ) -> LitePipeline:
        return self._queue(int, *_hset_args(name, key, value, mapping))

    def sadd(self, name: str, *values: Any) -> LitePipeline:
        return self._queue(int, "SADD", name, *values)

    def hdel(self, name: str, *keys: str) -> LitePipeline:
        return self._queue(int, "HDEL", name, *keys)

    def zadd(self, name: str, mapping: Mapping[str, float]) -> LitePipeline:
        pairs = [part for member, score in mapping.items() for part in (score, member)]
        return self._queue(int, "ZADD", name, *pairs)

    def zrem(self, name: str, *members: str) -> LitePipeline:
        return self._queue(int, "ZREM", name, *members)


class LiteScript:
    """A Lua script called by its SHA1, loaded on the first NOSCRIPT (as redis-py's Script)."""

    def __init__(self, client: LiteRedis, script: str) -> None:
        self._client = client
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()

    def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Reply:
        try:
            return self._client.execute_command("EVALSHA", self._sha, len(keys), *keys, *args)
        except BrokerRefused as error:
            if not error.reply.startswith("NOSCRIPT"):
                raise
        return self._client.execute_command("EVAL", self._script, len(keys), *keys, *args)


def _request(commands: Iterable[Iterable[Any]]) -> list[bytes]:
    """The RESP encoding of commands, as buffers to send one after the other: an argument of
    _OWN_BUFFER_BYTES or more (a chunk of an upload) is a buffer of its own, never copied;
    everything else is joined."""
    buffers: list[bytes] = []
    pending = bytearray()
    for command in commands:
        parts = [_as_bytes(arg) for arg in command]
        pending += b"*%d\r\n" % len(parts)
        for part in parts:
            pending += b"$%d\r\n" % len(part)
            if len(part) >= _OWN_BUFFER_BYTES:
                buffers += [bytes(pending), part]
                pending = bytearray(b"\r\n")
            else:
                pending += part
                pending += b"\r\n"
    buffers.append(bytes(pending))
    return buffers


def _send(sock: socket.socket, buffers: list[bytes], *, gather: bool) -> None:
    """All of buffers, in order: gathered by the kernel (sendmsg), or one sendall each where
    the socket cannot (an SSL socket has no sendmsg)."""
    if len(buffers) == 1 or not gather:
        for buffer in buffers:
            sock.sendall(buffer)
        return
    views = [memoryview(buffer) for buffer in buffers if buffer]
    first = 0
    while first < len(views):
        sent = sock.sendmsg(views[first : first + _IOV_MAX])
        while sent and sent >= len(views[first]):
            sent -= len(views[first])
            first += 1
        if sent:
            views[first] = views[first][sent:]


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"cannot send {type(value).__name__} to Redis")
    return repr(value).encode()


def _ok(reply: Reply) -> bool | None:
    return True if reply == b"OK" else None


def _pairs(flat: Sequence[Any] | None) -> dict[Any, Any]:
    items = list(flat or ())
    return dict(zip(items[::2], items[1::2], strict=True))


def _set_args(name: str, value: Any, ex: int | None, px: int | None, nx: bool) -> list[Any]:
    args: list[Any] = ["SET", name, value]
    if ex is not None:
        args += ["EX", ex]
    if px is not None:
        args += ["PX", px]
    if nx:
        args.append("NX")
    return args


def _hset_args(
    name: str, key: str | None, value: Any, mapping: Mapping[str, Any] | None
) -> list[Any]:
    pairs = {key: value} if key is not None else {}
    pairs.update(mapping or {})  # as redis-py: a field in both gets the mapping's value
    return ["HSET", name, *[part for item in pairs.items() for part in item]]


def _masked(url: str) -> str:
    """url without its userinfo (a password may hold any character, so everything up to the
    last "@" goes, not only what redaction recognises in running text) or ssl_password."""
    url = _without_tls_secret(url)
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return redact(url)
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


_QUERY_ARGUMENT = r"(?P<start>[?&])(?P<name>[^=&#]*)=(?P<value>[^&#]*)"


def _without_tls_secret(url: str) -> str:
    """url with the value of its ssl_password (the client key's passphrase) masked, however the
    name is encoded; the rest as written."""

    def mask(found: re.Match[str]) -> str:
        if unquote_plus(found["name"]) != "ssl_password":
            return found[0]
        return f"{found['start']}{found['name']}=***"

    return re.sub(_QUERY_ARGUMENT, mask, url) if "=" in url else url


def _closed_on_us(error: Exception) -> bool:
    import ssl

    return isinstance(error, EOFError | ssl.SSLEOFError | BrokenPipeError | ConnectionResetError)


def _wrap_tls(sock: socket.socket, context: ssl.SSLContext, host: str | None) -> socket.socket:
    try:
        return context.wrap_socket(sock, server_hostname=host)
    except OSError:
        sock.close()
        raise


if TYPE_CHECKING:
    import ssl

    import redis

    from .redis_tls import TlsSettings

    RedisClient: TypeAlias = redis.Redis | LiteRedis  # the workers pass redis-py's client
