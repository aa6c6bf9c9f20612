"""What a worker process works with, made on first use: the Docker engine, Redis, and where
sources come from (its policy, from the settings, and the opener of uploaded sources).

Celery forks its pool processes; connections made before the fork must not be shared, so each
process makes its own the first time a task needs one.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from sti.blobstore import BlobStore
from sti.redis_tls import for_redis_py
from sti.upload_refs import SCHEME

from .app import settings
from .buildlog import BuildLog
from .engine.archives import ExtractLimits
from .engine.docker_host import DockerHost
from .engine.sandbox import Sandbox
from .engine.sources import SourcePolicy, Sources
from .uploads import layers, opener, settled, streamer

_docker: tuple[int, DockerHost] | None = None


def _redis_options() -> dict[str, Any]:
    """A broker that restarts or goes away for a minute: every command is tried again (up to
    about 90 s, backing off to 5 s), and a dead address fails fast instead of hanging."""
    return {
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "retry": Retry(ExponentialBackoff(cap=5, base=0.25), retries=20),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
    }


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
                sandbox=Sandbox.from_settings(settings),
                source_images_keep=settings.source_images_keep,
                line_max_bytes=settings.log_line_max_bytes,
                trace_calls=settings.trace_engine_calls,
            ),
        )
    return _docker[1]


def redis_client() -> redis.Redis:
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        url = for_redis_py(settings.broker_url)  # the URL as kombu and Celery read it
        _redis = (os.getpid(), redis.Redis.from_url(url, **_redis_options()))
    return _redis[1]


def build_log(build_id: str) -> BuildLog:
    return BuildLog(
        redis_client(),
        build_id,
        max_lines=settings.log_max_lines,
        expires_s=settings.result_expires_s,
        max_bytes=settings.log_max_bytes,
        max_line_bytes=settings.log_line_max_bytes,
    )


def blob_store() -> BlobStore:
    return BlobStore(
        redis_client(),
        expires_s=settings.upload_expires_s,
        max_bytes=settings.upload_max_bytes,
        stall_s=settings.upload_stall_s,
    )


@functools.cache
def sources() -> Sources:
    """This worker's sources: the policy its settings give, and uploads from sti-submit."""
    return Sources(
        SourcePolicy(
            allow_file_urls=settings.allow_file_urls,
            allow_local_paths=settings.allow_local_sources,
            allow_internal_urls=settings.allow_internal_urls,
            allowed_networks=settings.allowed_networks,
            limits=ExtractLimits(
                max_total_bytes=settings.source_max_bytes, max_files=settings.source_max_files
            ),
            download_max_bytes=settings.download_max_bytes,
            download_timeout_s=settings.download_timeout_s,
        ),
        openers={SCHEME: opener(blob_store)},
        streamers={SCHEME: streamer(blob_store)},
        settled={SCHEME: settled(blob_store)},
        layers={SCHEME: layers(blob_store)},
        uploaded_scripts=lambda digest: blob_store().read(digest),
    )
