"""Celery's side of the wire without Celery: a task message (message protocol v2, JSON body) as
kombu's Redis transport stores it in a queue's list, and a task's state as the Redis result
backend stores it. The laptop publishes and reads with these; workers run Celery itself.

Both formats are documented by Celery ("Message Protocol", "Result backends") and checked
against a real worker by the queue tests.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

from .redaction import redact
from .source_urls import describe

READY_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
HIDDEN = "<hidden>"
# the keywords a message may carry that are for the build alone (--build-env): shown by name
_BUILD_ONLY = ("build_env",)
_REPR_MAX_CHARS = 1024  # as Celery's own argsrepr and kwargsrepr
_RESULT_KEY_PREFIX = "celery-task-meta-"
_NO_WORKFLOW = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(task: str, task_id: str, kwargs: Mapping[str, Any], queue: str) -> bytes:
    """The bytes to LPUSH on the queue's list for Celery to run task(**kwargs) as task_id."""
    body = json.dumps([[], dict(kwargs), _NO_WORKFLOW]).encode()
    headers = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "()",
        "kwargsrepr": keywords_repr(kwargs),
        "origin": f"{os.getpid()}@{socket.gethostname()}",
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    envelope = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": str(uuid.uuid4()),
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()


def keywords_repr(kwargs: object) -> str:
    """What a task message shows of its keywords (its kwargsrepr: the task events Flower and
    `celery events` show, a worker's log): build-only values hidden, their names kept, URL
    credentials masked, the source as logs show it (query values masked too). -e values are
    part of the image and shown."""
    shown = dict(kwargs) if isinstance(kwargs, Mapping) else kwargs
    if isinstance(shown, dict):
        for name in _BUILD_ONLY:
            if isinstance(shown.get(name), Mapping):
                shown[name] = dict.fromkeys(shown[name], HIDDEN)
            elif shown.get(name) is not None:
                shown[name] = HIDDEN
        if isinstance(shown.get("source"), str):  # a presigned URL's query is its secret
            shown["source"] = describe(shown["source"])
    text = redact(repr(shown))  # masked before it is cut: a cut URL is not recognised
    return text if len(text) <= _REPR_MAX_CHARS else text[: _REPR_MAX_CHARS - 3] + "..."


def result_key(task_id: str) -> str:
    return f"{_RESULT_KEY_PREFIX}{task_id}"


def task_state(stored: bytes | None) -> dict[str, Any]:
    """A task's state from its stored meta: status, result (an exception as
    {exc_type, exc_message}), name; PENDING when nothing is stored (yet)."""
    if stored is None:
        return {"status": "PENDING", "result": None, "name": None}
    meta = json.loads(stored)
    if not isinstance(meta, dict) or not isinstance(meta.get("status"), str):
        return {"status": "PENDING", "result": None, "name": None}
    return meta
