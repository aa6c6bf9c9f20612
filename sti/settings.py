"""The worker's settings, read from the environment once (names in the README), each held to
its range: sti-worker refuses to start with one outside it (sti.environment.InvalidSetting)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from .environment import (
    InvalidSetting,
    broker_url,
    byte_size,
    choice,
    flag,
    host_id,
    integer,
    result_backend,
    seconds,
    upload_expires_s,
    upload_max_bytes,
)
from .lines import LINE_MAX_BYTES, LOG_MAX_BYTES, USAGE_MAX_BYTES
from .redaction import redact
from .wire import host_queue

BUILDERS = ("auto", "buildkit", "legacy", "container")
BUILD_NETWORKS = ("bridge", "none")
BUILD_PRIVILEGES = ("restricted", "engine")
LOG_FORMATS = ("console", "json")
_ENGINE_LEAST_MEMORY = 6 * 1024**2  # the engine refuses a container memory limit below it


@dataclass(frozen=True)
class Settings:
    broker_url: str
    result_backend: str
    host_id: str
    docker_url: str | None
    step_time_limit_s: int
    result_expires_s: int
    lease_s: int
    max_deliveries: int
    log_max_lines: int
    log_max_bytes: int
    log_line_max_bytes: int
    usage_max_bytes: int
    log_format: str | None  # None: console on a terminal, else json
    allow_file_urls: bool
    allow_local_sources: bool
    allow_internal_urls: bool
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    source_max_bytes: int
    source_max_files: int
    download_max_bytes: int
    download_timeout_s: int
    upload_max_bytes: int
    upload_expires_s: int
    upload_stall_s: int
    registry_auth: dict[str, str] | None
    builder: str
    build_cache_keep_bytes: int
    source_images_keep: int
    build_memory_bytes: int
    build_pids: int
    build_network: str
    build_privileges: str
    trace_engine_calls: bool = False

    @property
    def host_queue(self) -> str:
        return host_queue(self.host_id)

    @classmethod
    def from_env(cls) -> Settings:
        broker = _worker_redis("STI_BROKER_URL", broker_url())
        return cls(
            broker_url=broker,
            result_backend=_worker_redis("STI_RESULT_BACKEND", result_backend(broker)),
            host_id=host_id(),
            docker_url=os.environ.get("DOCKER_HOST", "").strip() or None,  # sti-worker checks it
            # the soft limit (app.py) comes a second or more before the hard one
            step_time_limit_s=seconds("STI_STEP_TIME_LIMIT", 3600, least=2),
            result_expires_s=seconds("STI_RESULT_EXPIRES", 7 * 24 * 3600, least=60),
            # renewed every third or quarter of it, at most once a second
            lease_s=seconds("STI_LEASE_SECONDS", 60, least=2),
            max_deliveries=integer("STI_MAX_DELIVERIES", 3, least=1),
            log_max_lines=integer("STI_LOG_MAX_LINES", 20000, least=1),
            # a cap of a few bytes would cut every line to its note
            log_max_bytes=byte_size("STI_LOG_MAX_BYTES", LOG_MAX_BYTES, least=64 * 1024),
            log_line_max_bytes=byte_size("STI_LOG_LINE_MAX_BYTES", LINE_MAX_BYTES, least=256),
            usage_max_bytes=byte_size("STI_USAGE_MAX_BYTES", USAGE_MAX_BYTES, least=1024),
            log_format=_log_format(),
            allow_file_urls=flag("STI_ALLOW_FILE_URLS"),
            allow_local_sources=flag("STI_ALLOW_LOCAL_SOURCES"),
            allow_internal_urls=flag("STI_ALLOW_INTERNAL_URLS"),
            allowed_networks=networks("STI_ALLOWED_NETWORKS"),
            source_max_bytes=byte_size("STI_SOURCE_MAX_BYTES", 2 * 1024**3, least=1),
            source_max_files=integer("STI_SOURCE_MAX_FILES", 100_000, least=1),
            download_max_bytes=byte_size("STI_DOWNLOAD_MAX_BYTES", 1024**3, least=1),
            download_timeout_s=seconds("STI_DOWNLOAD_TIMEOUT", 60),
            upload_max_bytes=upload_max_bytes(),
            upload_expires_s=upload_expires_s(),
            upload_stall_s=seconds("STI_UPLOAD_STALL_TIMEOUT", 60),
            registry_auth=_registry_auth(),
            builder=choice("STI_BUILDER", "auto", BUILDERS),
            build_cache_keep_bytes=byte_size("STI_BUILD_CACHE_KEEP", 2 * 1024**3),
            source_images_keep=integer("STI_SOURCE_IMAGES_KEEP", 10),
            build_memory_bytes=_build_memory(),
            build_pids=integer("STI_BUILD_PIDS", 4096),
            build_network=choice("STI_BUILD_NETWORK", "bridge", BUILD_NETWORKS),
            build_privileges=choice("STI_BUILD_PRIVILEGES", "restricted", BUILD_PRIVILEGES),
            trace_engine_calls=flag("STI_TRACE_ENGINE_CALLS"),
        )


def _worker_redis(name: str, url: str) -> str:
    """A worker's broker or result backend: Celery's Redis transport takes these two schemes."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("redis", "rediss"):
        raise InvalidSetting(f"{name}: {redact(url)} is not a redis:// or rediss:// URL")
    if any(key == "db" for key, _ in parse_qsl(parts.query, keep_blank_values=True)):
        # kombu passes it on as a second database argument and fails with a TypeError
        raise InvalidSetting(
            f"{name}: {redact(url)} names its database as ?db=; a worker takes it as the path "
            "(redis://host:6379/2)"
        )
    return url


def _log_format() -> str | None:
    """STI_LOG_FORMAT; None (not set) is console on a terminal, else json."""
    if not os.environ.get("STI_LOG_FORMAT", "").strip():
        return None
    return choice("STI_LOG_FORMAT", "json", LOG_FORMATS)


def _build_memory() -> int:
    memory = byte_size("STI_BUILD_MEMORY", 4 * 1024**3)
    if 0 < memory < _ENGINE_LEAST_MEMORY:
        raise InvalidSetting(
            f"STI_BUILD_MEMORY={os.environ['STI_BUILD_MEMORY']!r} is below the engine's least "
            "memory limit, 6M (0 lifts the limit)"
        )
    return memory


def networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma list of networks (10.20.0.0/16,fd00:1::/64, or single addresses)."""
    found = []
    for item in os.environ.get(name, "").split(","):
        if item.strip():
            try:
                found.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as error:
                raise InvalidSetting(
                    f"{name}: {item.strip()!r} is not a network: {error}"
                ) from error
    return tuple(found)


def _registry_auth() -> dict[str, str] | None:
    """Push and pull credentials: the worker's own, never from a task message."""
    username = os.environ.get("STI_REGISTRY_USERNAME")
    if not username:
        return None
    return {"username": username, "password": os.environ.get("STI_REGISTRY_PASSWORD", "")}
