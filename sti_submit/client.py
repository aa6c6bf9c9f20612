"""The Python API of sti: submit builds and validations, wait, follow logs, cancel, list hosts.

Talks to the workers only through Celery (task names, JSON) and Redis (log streams, cancel
flags, host registry), so it needs neither Docker nor GitPython.

    client = StiClient("redis://build-queue:6379/0")
    request = BuildRequest("https://git.example/app.git", "acme/builder", "acme/app")
    build_id = client.submit_build(request)
    for line in client.follow(build_id):
        print(line)
    result = client.result(build_id)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.result import AsyncResult
from celery.states import READY_STATES

from sti import keys, settings
from sti.blobstore import BlobStore
from sti.cancel_flags import request_cancel
from sti.errors import (
    BrokerUnreachable,
    Cancelled,
    InvalidInput,
    TimedOut,
)
from sti.failures import error_for_failure
from sti.model import BuildRequest, Result, ValidateRequest
from sti.wire import BUILD_TASK, JSON_ONLY, SHARED_QUEUE, VALIDATE_TASK

_CANCEL_EXPIRES_S = 24 * 3600
_FINAL_RESULT_GRACE_S = 60
_SUBMITTED_EXPIRES_S = 30 * 24 * 3600


class StiClient:
    def __init__(self, broker_url: str | None = None, result_backend: str | None = None) -> None:
        self.broker_url = broker_url or settings.broker_url()
        backend = result_backend or settings.result_backend(self.broker_url)
        self.app = Celery("sti-client", broker=self.broker_url, backend=backend)
        self.app.conf.update(
            **JSON_ONLY,
            broker_connection_retry_on_startup=False,
            broker_connection_max_retries=1,
            task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2},
            redis_socket_connect_timeout=3,
            redis_socket_timeout=30,
            broker_transport_options={"socket_connect_timeout": 3},
        )
        self.redis = redis.Redis.from_url(
            self.broker_url, socket_connect_timeout=3, socket_timeout=30
        )

    def close(self) -> None:
        self.redis.close()
        self.app.close()

    def check_broker(self) -> None:
        """Raise BrokerUnreachable, naming the URL, unless the broker answers."""
        try:
            self.redis.ping()
        except (redis.RedisError, OSError) as error:
            raise BrokerUnreachable(
                f"cannot reach the broker at {_safe_url(self.broker_url)}: {error}"
            ) from error

    # submitting

    def submit_build(self, request: BuildRequest, say: Callable[[str], None] | None = None) -> str:
        """Enqueue a build; a SOURCE that is a path on this machine is uploaded first."""
        self.check_broker()
        local = Path(request.source).expanduser()
        if local.exists():
            request = replace(request, source=self._upload(local, request.exclude, say))
        kwargs = request.to_json()
        build_id = kwargs.pop("build_id")
        self._claim_id(build_id)
        self.app.send_task(BUILD_TASK, kwargs=kwargs, queue=SHARED_QUEUE, task_id=build_id)
        return build_id

    def _claim_id(self, build_id: str) -> None:
        """A build id names one build: a request submitted twice needs a new id."""
        if not self.redis.set(keys.submitted(build_id), 1, nx=True, ex=_SUBMITTED_EXPIRES_S):
            raise InvalidInput(f"build id {build_id} was already submitted; make a new request")

    def _upload(
        self, path: Path, exclude: tuple[str, ...], say: Callable[[str], None] | None
    ) -> str:
        from sti_submit.upload import upload_source

        store = BlobStore(
            self.redis, expires_s=settings.upload_expires_s(), max_bytes=settings.upload_max_bytes()
        )
        uploaded = upload_source(store, path, exclude)
        if say and uploaded.sent:
            say(f"Uploaded {path} ({uploaded.size} bytes) as {uploaded.ref.digest}")
        elif say:
            say(f"Already uploaded: {path} as {uploaded.ref.digest}")
        return str(uploaded.ref)

    def submit_validate(self, request: ValidateRequest) -> str:
        kwargs = request.to_json()
        build_id = kwargs.pop("build_id")
        self.check_broker()
        self._claim_id(build_id)
        self.app.send_task(VALIDATE_TASK, kwargs=kwargs, queue=SHARED_QUEUE, task_id=build_id)
        return build_id

    # watching

    def state(self, build_id: str) -> str:
        return str(AsyncResult(build_id, app=self.app).state)

    def status(self, build_id: str) -> dict[str, Any]:
        """The result object once finished; before that build_id, state and phase."""
        self.check_broker()
        async_result = AsyncResult(build_id, app=self.app)
        if async_result.state in READY_STATES:
            return self._result_of(async_result).to_json()
        info = async_result.info if isinstance(async_result.info, dict) else {}
        return {
            "build_id": build_id,
            "state": async_result.state,
            "phase": info.get("phase", _phase_for(async_result.state)),
            "host": info.get("host"),
        }

    def known(self, build_id: str) -> bool:
        """Whether build_id names a build this queue has seen (submitted, logged or finished)."""
        return bool(
            self.redis.exists(keys.submitted(build_id), keys.log_stream(build_id))
            or self.state(build_id) != "PENDING"
        )

    def follow(
        self,
        build_id: str,
        *,
        follow: bool = True,
        block_ms: int = 1000,
        deadline: float | None = None,
    ) -> Iterator[str]:
        """Log lines from the first one; with follow, until the build ends (or the monotonic
        deadline passes, checked at least every block_ms even when the build is silent)."""
        stream = keys.log_stream(build_id)
        last_id = "0-0"
        while deadline is None or time.monotonic() < deadline:
            block = block_ms if follow else None
            batch = self.redis.xread({stream: last_id}, count=500, block=block)
            entries = batch[0][1] if batch else []
            for entry_id, fields in entries:
                last_id = entry_id
                if _field(fields, keys.END_FIELD) is not None:
                    return
                line = _field(fields, keys.LINE_FIELD)
                if line is not None:
                    yield line
            if not follow and not entries:
                return
            if not entries and self.state(build_id) in READY_STATES:
                return

    def result(self, build_id: str, timeout: float | None = None) -> Result:
        async_result = AsyncResult(build_id, app=self.app)
        async_result.get(timeout=timeout, propagate=False, interval=0.2)
        return self._result_of(async_result)

    def wait(
        self,
        build_id: str,
        *,
        timeout: float | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> Result:
        """Follow the build to its end and return its result; past timeout, cancel it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for line in self.follow(build_id, deadline=deadline):
            if on_line:
                on_line(line)
        if deadline is None or time.monotonic() < deadline:
            return self.result(build_id, timeout=_FINAL_RESULT_GRACE_S)
        return self._time_out(build_id, timeout or 0)

    def _time_out(self, build_id: str, timeout: float) -> Result:
        message = f"the build did not finish within {timeout:g}s and was cancelled"
        self.cancel(build_id, code=TimedOut.code, message=message)
        try:
            return self.result(build_id, timeout=_FINAL_RESULT_GRACE_S)
        except Exception:
            return Result.from_error("build", build_id, TimedOut(message))

    # controlling

    def cancel(
        self, build_id: str, *, code: str = Cancelled.code, message: str = "cancelled by the user"
    ) -> str:
        """Ask the build to stop; returns the state it was in."""
        self.check_broker()
        state = self.state(build_id)
        if state in READY_STATES:
            return state
        request_cancel(self.redis, build_id, code, message, _CANCEL_EXPIRES_S)
        if state == "PENDING":
            # not claimed yet: a worker that receives it drops it
            self.app.control.revoke(build_id)
        return state

    def workers(self) -> list[dict[str, Any]]:
        """Each live host: id, slots (its workers' concurrency) and the builds running on it."""
        from sti.leases import HostSlots

        self.check_broker()
        hosts = []
        for raw in sorted(self.redis.smembers(keys.HOSTS)):
            host_id = raw.decode() if isinstance(raw, bytes) else raw
            registry = HostSlots(self.redis, host_id, lease_s=60)
            nodes = registry.live_nodes()
            if not nodes:
                continue
            hosts.append(
                {
                    "host_id": host_id,
                    "slots": sum(nodes.values()),
                    "running": registry.running(),
                    "nodes": sorted(nodes),
                }
            )
        return hosts

    def _result_of(self, async_result: AsyncResult) -> Result:
        build_id = async_result.id
        kind = "validate" if async_result.name == VALIDATE_TASK else "build"
        if async_result.state == "SUCCESS" and isinstance(async_result.result, dict):
            return Result.from_json(async_result.result)
        if async_result.state == "REVOKED":
            return Result.from_error(kind, build_id, Cancelled("the build was cancelled"))
        return Result.from_error(kind, build_id, error_for_failure(async_result.result))


def _field(fields: dict[Any, Any], name: str) -> str | None:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _phase_for(state: str) -> str:
    return {"PENDING": "queued", "STARTED": "claimed", "RETRY": "waiting"}.get(state, state.lower())


def _safe_url(url: str) -> str:
    """The URL without a password, for messages."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))
