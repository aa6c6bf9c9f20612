"""What both sides read from the environment: the broker, the result backend, the upload's
limits and sizes with units. The laptop side needs only these (sti.settings holds the worker's
whole configuration and costs a few ms more to import)."""

from __future__ import annotations

import os
import re
import socket

DEFAULT_BROKER_URL = "redis://localhost:6379/0"


def flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def integer(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def broker_url() -> str:
    return os.environ.get("STI_BROKER_URL") or DEFAULT_BROKER_URL


def result_backend(broker: str) -> str:
    return os.environ.get("STI_RESULT_BACKEND") or broker


def host_id() -> str:
    return os.environ.get("STI_HOST_ID") or socket.gethostname()


_SIZE = re.compile(r"([0-9]+)([kmgt]?)(?:i?b)?")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def byte_size(name: str, default: int) -> int:
    """A size in bytes, with an optional binary unit: 512M, 2G, 2GiB."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    size = _SIZE.fullmatch(value)
    if size is None:
        raise ValueError(f"{name}={os.environ[name]!r} is not a size such as 512M or 2G")
    return int(size.group(1)) * _UNITS[size.group(2)]


def upload_max_bytes() -> int:
    """The cap of one uploaded source (compressed); the client checks it before uploading."""
    return byte_size("STI_UPLOAD_MAX_BYTES", 1024**3)


def upload_expires_s() -> int:
    return integer("STI_UPLOAD_EXPIRES", 24 * 3600)
