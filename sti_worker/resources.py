"""Per-process connections of a worker: the Docker engine and Redis, made on first use.

Celery forks its pool processes; connections made before the fork must not be shared, so each
process makes its own the first time a task needs one.
"""

from __future__ import annotations

import os

import redis

from .app import settings
from .buildlog import BuildLog
from .engine.docker_host import DockerHost

_docker: tuple[int, DockerHost] | None = None
_redis: tuple[int, redis.Redis] | None = None


def docker_host() -> DockerHost:
    global _docker
    if _docker is None or _docker[0] != os.getpid():
        _docker = (
            os.getpid(),
            DockerHost(
                settings.docker_url,
                registry_auth=settings.registry_auth,
                builder=settings.builder,
                build_cache_keep_bytes=settings.build_cache_keep_bytes,
            ),
        )
    return _docker[1]


def redis_client() -> redis.Redis:
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis.Redis.from_url(settings.broker_url))
    return _redis[1]


def build_log(build_id: str) -> BuildLog:
    return BuildLog(
        redis_client(),
        build_id,
        max_lines=settings.log_max_lines,
        expires_s=settings.result_expires_s,
    )
