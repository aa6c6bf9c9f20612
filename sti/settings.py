"""The worker's settings, read from the environment once (names in the README)."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from .environment import (
    broker_url,
    byte_size,
    flag,
    host_id,
    integer,
    result_backend,
    upload_expires_s,
    upload_max_bytes,
)
from .lines import LINE_MAX_BYTES, LOG_MAX_BYTES, USAGE_MAX_BYTES
from .wire import host_queue


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

    @property
    def host_queue(self) -> str:
        return host_queue(self.host_id)

    @classmethod
    def from_env(cls) -> Settings:
        broker = broker_url()
        return cls(
            broker_url=broker,
            result_backend=result_backend(broker),
            host_id=host_id(),
            docker_url=os.environ.get("DOCKER_HOST") or None,
            step_time_limit_s=integer("STI_STEP_TIME_LIMIT", 3600),
            result_expires_s=integer("STI_RESULT_EXPIRES", 7 * 24 * 3600),
            lease_s=integer("STI_LEASE_SECONDS", 60),
            max_deliveries=integer("STI_MAX_DELIVERIES", 3),
            log_max_lines=integer("STI_LOG_MAX_LINES", 20000),
            log_max_bytes=size_at_least("STI_LOG_MAX_BYTES", LOG_MAX_BYTES, 64 * 1024),
            log_line_max_bytes=size_at_least("STI_LOG_LINE_MAX_BYTES", LINE_MAX_BYTES, 256),
            usage_max_bytes=size_at_least("STI_USAGE_MAX_BYTES", USAGE_MAX_BYTES, 1024),
            allow_file_urls=flag("STI_ALLOW_FILE_URLS"),
            allow_local_sources=flag("STI_ALLOW_LOCAL_SOURCES"),
            allow_internal_urls=flag("STI_ALLOW_INTERNAL_URLS"),
            allowed_networks=networks("STI_ALLOWED_NETWORKS"),
            source_max_bytes=byte_size("STI_SOURCE_MAX_BYTES", 2 * 1024**3),
            source_max_files=integer("STI_SOURCE_MAX_FILES", 100_000),
            download_max_bytes=byte_size("STI_DOWNLOAD_MAX_BYTES", 1024**3),
            download_timeout_s=integer("STI_DOWNLOAD_TIMEOUT", 60),
            upload_max_bytes=upload_max_bytes(),
            upload_expires_s=upload_expires_s(),
            upload_stall_s=integer("STI_UPLOAD_STALL_TIMEOUT", 60),
            registry_auth=_registry_auth(),
            builder=os.environ.get("STI_BUILDER") or "auto",
            build_cache_keep_bytes=byte_size("STI_BUILD_CACHE_KEEP", 2 * 1024**3),
            source_images_keep=integer("STI_SOURCE_IMAGES_KEEP", 10),
            build_memory_bytes=byte_size("STI_BUILD_MEMORY", 4 * 1024**3),
            build_pids=integer("STI_BUILD_PIDS", 4096),
            build_network=os.environ.get("STI_BUILD_NETWORK") or "bridge",
            build_privileges=os.environ.get("STI_BUILD_PRIVILEGES") or "restricted",
        )


def size_at_least(name: str, default: int, minimum: int) -> int:
    """A size (see byte_size) of at least minimum bytes: a cap of a few bytes would cut every
    line to its note."""
    size = byte_size(name, default)
    if size < minimum:
        raise ValueError(f"{name}={os.environ[name]!r} is less than the least it may be, {minimum}")
    return size


def networks(name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """A comma list of networks (10.20.0.0/16,fd00:1::/64, or single addresses)."""
    found = []
    for item in os.environ.get(name, "").split(","):
        if item.strip():
            try:
                found.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as error:
                raise ValueError(f"{name}: {item.strip()!r} is not a network: {error}") from error
    return tuple(found)


def _registry_auth() -> dict[str, str] | None:
    """Push and pull credentials: the worker's own, never from a task message."""
    username = os.environ.get("STI_REGISTRY_USERNAME")
    if not username:
        return None
    return {"username": username, "password": os.environ.get("STI_REGISTRY_PASSWORD", "")}
