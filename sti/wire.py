"""What crosses the queue: task names and queue names (public: other Celery apps send sti's
tasks by name) and the serializer settings both sides use."""

from __future__ import annotations

BUILD_TASK = "sti.build"
VALIDATE_TASK = "sti.validate"
USAGE_TASK = "sti.usage"
STEP_TASK = "sti.step"
FINISH_TASK = "sti.finish"
ABORT_TASK = "sti.abort"
CLEANUP_TASK = "sti.cleanup"

SHARED_QUEUE = "sti.builds"


def host_queue(host_id: str) -> str:
    return f"sti.host.{host_id}"


# Tasks and results are JSON only, so a foreign Celery app can read them and nothing unpickles.
JSON_ONLY = {
    "task_serializer": "json",
    "result_serializer": "json",
    "accept_content": ["json"],
    "result_accept_content": ["json"],
    # not extended: a task's arguments (a source URL with its credentials) are not stored
    "result_extended": False,
}
