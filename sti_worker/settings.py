"""Worker and client settings, read from the environment once (names in the README)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

DEFAULT_BROKER_URL = "redis://localhost:6379/0"


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


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

    @property
    def host_queue(self) -> str:
        return host_queue(self.host_id)

    @classmethod
    def from_env(cls) -> Settings:
        broker = os.environ.get("STI_BROKER_URL") or DEFAULT_BROKER_URL
        return cls(
            broker_url=broker,
            result_backend=os.environ.get("STI_RESULT_BACKEND") or broker,
            host_id=os.environ.get("STI_HOST_ID") or socket.gethostname(),
            docker_url=os.environ.get("DOCKER_HOST") or None,
            step_time_limit_s=_int("STI_STEP_TIME_LIMIT", 3600),
            result_expires_s=_int("STI_RESULT_EXPIRES", 7 * 24 * 3600),
            lease_s=_int("STI_LEASE_SECONDS", 60),
            max_deliveries=_int("STI_MAX_DELIVERIES", 3),
            log_max_lines=_int("STI_LOG_MAX_LINES", 20000),
        )


SHARED_QUEUE = "sti.builds"


def host_queue(host_id: str) -> str:
    return f"sti.host.{host_id}"
