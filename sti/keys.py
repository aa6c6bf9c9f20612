"""Redis key names shared by workers and clients (log streams, cancel flags, leases, hosts)."""

from __future__ import annotations

import re

PREFIX = "sti:"
# a Docker host's id names its queue (sti.host.<id>), its keys and its Celery nodes
_HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
HOSTS = f"{PREFIX}hosts"
RUNNING_BUILDS = f"{PREFIX}running"


def is_host_id(value: object) -> bool:
    """At most 128 letters, digits, ".", "_" and "-", starting with a letter or digit."""
    return isinstance(value, str) and bool(_HOST_ID.fullmatch(value))


def log_stream(build_id: str) -> str:
    return f"{PREFIX}log:{build_id}"


def cancel_flag(build_id: str) -> str:
    return f"{PREFIX}cancel:{build_id}"


def submitted(build_id: str) -> str:
    return f"{PREFIX}submitted:{build_id}"


def tag_lock(tag: str) -> str:
    return f"{PREFIX}lock:tag:{tag}"


def host_running(host_id: str) -> str:
    return f"{PREFIX}host:{host_id}:running"


def host_nodes(host_id: str) -> str:
    return f"{PREFIX}host:{host_id}:nodes"


def host_slots(host_id: str) -> str:
    return f"{PREFIX}host:{host_id}:slots"


def build_claim(build_id: str) -> str:
    return f"{PREFIX}claim:{build_id}"


def cache_trimmed(host_id: str) -> str:
    return f"{PREFIX}host:{host_id}:cache-trimmed"


def deliveries(task_id: str, retries: int) -> str:
    return f"{PREFIX}deliveries:{task_id}:{retries}"


def step_running(task_id: str) -> str:
    return f"{PREFIX}step:{task_id}:running"


def step_output(task_id: str) -> str:
    return f"{PREFIX}step:{task_id}:output"


def blob_meta(digest: str) -> str:
    return f"{PREFIX}blob:{digest}:meta"


def blob_chunk(digest: str, index: int) -> str:
    return f"{PREFIX}blob:{digest}:{index}"


def fingerprint(value: str) -> str:
    return f"{PREFIX}fingerprint:{value}"


# Fields of log stream entries.
LINE_FIELD = "line"
END_FIELD = "end"
