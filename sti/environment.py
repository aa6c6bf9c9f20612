"""What both sides read from the environment: the broker, the result backend, the upload's
limits and sizes with units. The laptop side needs only these (sti.settings holds the worker's
whole configuration and costs a few ms more to import).

Every reader holds its variable to a range and refuses anything else with InvalidSetting, one
line naming the variable and the value: a value that does not parse is never read as another.
"""

from __future__ import annotations

import os
import re
import socket

from .errors import InvalidInput
from .keys import is_host_id

DEFAULT_BROKER_URL = "redis://localhost:6379/0"
YEAR_S = 366 * 24 * 3600  # the longest any duration may be: more is a slip of the keyboard

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")
_WHOLE = re.compile(r"[+-]?[0-9]+")


class InvalidSetting(InvalidInput, ValueError):
    """A variable of the environment outside its range. Also a ValueError, what Python's own
    parsers raise for a value they cannot read."""


def _value(name: str) -> str:
    return os.environ.get(name, "").strip()


def _refused(name: str, why: str) -> InvalidSetting:
    return InvalidSetting(f"{name}={os.environ.get(name, '')!r} {why}")


def flag(name: str) -> bool:
    """On for 1, true, yes or on; off for 0, false, no, off or nothing (any case)."""
    value = _value(name).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise _refused(name, "is not a flag: 1, true, yes or on; 0, false, no, off or empty")


def _within(name: str, number: int, least: int, most: int | None) -> int:
    if number < least:
        raise _refused(name, f"is less than the least it may be, {least}")
    if most is not None and number > most:
        raise _refused(name, f"is more than the most it may be, {most}")
    return number


def integer(name: str, default: int, *, least: int = 0, most: int | None = None) -> int:
    """A whole number (digits, no fraction, no exponent) from least to most."""
    value = _value(name)
    if not value:
        return default
    if not _WHOLE.fullmatch(value):
        raise _refused(name, "is not a whole number")
    return _within(name, int(value), least, most)


def seconds(name: str, default: int, *, least: int = 1) -> int:
    """A duration in whole seconds, from least to a year."""
    return integer(name, default, least=least, most=YEAR_S)


_SIZE = re.compile(r"([0-9]+)([kmgt]?)(?:i?b)?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def byte_size(name: str, default: int, *, least: int = 0) -> int:
    """A size in bytes, with an optional binary unit: 512M, 2G, 2GiB; at least least bytes."""
    value = _value(name).lower()
    if not value:
        return default
    size = _SIZE.fullmatch(value)
    if size is None:
        raise _refused(name, "is not a size such as 512M or 2G")
    return _within(name, int(size.group(1)) * _UNITS[size.group(2)], least, None)


def choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of choices (any case); nothing is the default."""
    value = _value(name).lower() or default
    if value not in choices:
        raise _refused(name, f"is not one of: {', '.join(choices)}")
    return value


def redis_url(name: str, default: str) -> str:
    """A Redis URL (redis://, rediss://, unix://) read as sti-submit reads it."""
    from .redis_wire import RedisAddress  # only when a URL is read: the CLI starts without it

    url = _value(name) or default
    try:
        RedisAddress.from_url(url)
    except InvalidInput as error:
        raise InvalidSetting(f"{name}: {error.message}") from error
    return url


def broker_url() -> str:
    return redis_url("STI_BROKER_URL", DEFAULT_BROKER_URL)


def result_backend(broker: str) -> str:
    return redis_url("STI_RESULT_BACKEND", broker)


def host_id() -> str:
    """This Docker host's id: it names a queue, Redis keys and Celery nodes, so letters, digits,
    ".", "_" and "-" only."""
    value = _value("STI_HOST_ID") or socket.gethostname()
    if not is_host_id(value):
        raise InvalidSetting(
            f"STI_HOST_ID={value!r} (--host-id) is not a host id: at most 128 letters, digits, "
            "'.', '_' and '-', starting with a letter or digit"
        )
    return value


def upload_max_bytes() -> int:
    """The cap of one uploaded source (compressed); the client checks it before uploading."""
    return byte_size("STI_UPLOAD_MAX_BYTES", 1024**3, least=1)


def upload_expires_s() -> int:
    """How long an upload is kept: a minute at least, for the worker to read it."""
    return seconds("STI_UPLOAD_EXPIRES", 24 * 3600, least=60)
