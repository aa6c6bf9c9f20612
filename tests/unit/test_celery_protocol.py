"""The laptop's task messages and result reading against Celery itself: a message sti publishes
is the message Celery's send_task publishes, and what Celery's backend stores sti reads."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from celery.exceptions import TimeLimitExceeded

from sti.celery_protocol import READY_STATES, result_key, task_message, task_state
from sti.errors import BuildFailed, InternalError, TimedOut
from sti.failures import error_for_failure
from sti.wire import BUILD_TASK, JSON_ONLY

_VOLATILE_HEADERS = {"origin", "kwargsrepr"}
_VOLATILE_PROPERTIES = {"reply_to", "delivery_tag"}


@pytest.fixture
def celery_app(broker_url: str) -> Iterator[Celery]:
    app = Celery("reference", broker=broker_url, backend=broker_url)
    app.conf.update(**JSON_ONLY)
    yield app
    app.close()


def _queued(client: redis.Redis, queue: str) -> dict[str, object]:
    raw = client.rpop(queue)
    assert isinstance(raw, bytes)
    return dict(json.loads(raw))


def test_a_task_message_is_the_one_celery_sends(
    celery_app: Celery, redis_client: redis.Redis
) -> None:
    queue = f"sti.test.{uuid.uuid4().hex}"
    kwargs = {"source": "https://git.example/app.git", "build_image": "b", "tag": "t", "env": {}}
    task_id = uuid.uuid4().hex
    celery_app.send_task(BUILD_TASK, kwargs=kwargs, queue=queue, task_id=task_id)
    theirs = _queued(redis_client, queue)
    redis_client.lpush(queue, task_message(BUILD_TASK, task_id, kwargs, queue))
    ours = _queued(redis_client, queue)

    def comparable(message: dict[str, object]) -> dict[str, object]:
        headers = {k: v for k, v in dict(message["headers"]).items() if k not in _VOLATILE_HEADERS}
        properties = dict(message["properties"])
        stable = {k: v for k, v in properties.items() if k not in _VOLATILE_PROPERTIES}
        body = json.loads(base64.b64decode(str(message["body"])))
        return {**message, "headers": headers, "properties": stable, "body": body}

    assert comparable(ours) == comparable(theirs)
    redis_client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


def test_a_task_message_does_not_show_credentials_to_the_worker_log() -> None:
    kwargs = {"source": "https://user:token-123@git.example/app.git"}
    message = json.loads(task_message(BUILD_TASK, uuid.uuid4().hex, kwargs, "sti.builds"))
    assert "token-123" not in message["headers"]["kwargsrepr"]
    body = json.loads(base64.b64decode(message["body"]))
    assert body[1] == kwargs  # the worker still gets the URL it needs


def test_states_celery_stores_are_read(celery_app: Celery, redis_client: redis.Redis) -> None:
    done, progress, failed, timed_out = (uuid.uuid4().hex for _ in range(4))
    celery_app.backend.store_result(done, {"success": True}, "SUCCESS")
    celery_app.backend.store_result(progress, {"phase": "build"}, "PROGRESS")
    celery_app.backend.mark_as_failure(failed, BuildFailed("prepare exited with 3"))
    celery_app.backend.mark_as_failure(timed_out, TimeLimitExceeded(60))

    def read(task_id: str) -> dict[str, object]:
        return task_state(redis_client.get(result_key(task_id)))

    assert read(done)["status"] == "SUCCESS"
    assert read(done)["result"] == {"success": True}
    assert read(progress)["result"] == {"phase": "build"}
    assert read(progress)["status"] not in READY_STATES
    failure = error_for_failure(read(failed)["result"])
    assert isinstance(failure, BuildFailed)
    assert failure.message == "prepare exited with 3"
    assert isinstance(error_for_failure(read(timed_out)["result"]), TimedOut)
    assert read(uuid.uuid4().hex)["status"] == "PENDING"
    redis_client.delete(*(result_key(task_id) for task_id in (done, progress, failed, timed_out)))


@pytest.mark.parametrize("stored", [b"[]", b'{"status": 3}', b'"SUCCESS"'])
def test_a_record_that_is_not_a_task_state_reads_as_pending(stored: bytes) -> None:
    assert task_state(stored)["status"] == "PENDING"


def test_an_unknown_exception_is_an_internal_error_naming_it() -> None:
    error = error_for_failure({"exc_type": "ZeroDivisionError", "exc_message": ["division"]})
    assert isinstance(error, InternalError)
    assert error.message == "the build failed: ZeroDivisionError: division"
