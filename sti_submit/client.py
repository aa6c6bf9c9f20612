"""The Python API of sti: submit builds and validations, wait, follow logs, cancel, list hosts.

Talks to the workers only through Redis: task messages in Celery's protocol on the queue, the
result backend's records, log streams, cancel flags, the host registry. It imports neither Celery
nor redis-py (sti.redis_wire, sti.celery_protocol), so a submit starts in a few milliseconds.

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
from typing import TYPE_CHECKING, Any

from sti import environment, keys
from sti.blobstore import BlobStore
from sti.cancel_flags import request_cancel
from sti.celery_protocol import READY_STATES, result_key, task_message, task_state
from sti.env_files import archive_environment, source_environment
from sti.errors import Cancelled, InvalidInput, TimedOut
from sti.failures import error_for_failure
from sti.ignore import ignore_matcher
from sti.model import BuildRequest, Result, UsageRequest, ValidateRequest
from sti.redis_wire import LiteRedis
from sti.scripts_urls import UPLOADED_SCHEME, local_directory, pack_scripts
from sti.source_scripts import source_scripts
from sti.wire import BUILD_TASK, SHARED_QUEUE, USAGE_TASK, VALIDATE_TASK

if TYPE_CHECKING:
    from sti_submit.upload import SourceUpload

_CANCEL_EXPIRES_S = 24 * 3600
_FINAL_RESULT_GRACE_S = 60
_SUBMITTED_EXPIRES_S = 30 * 24 * 3600
_RESULT_POLL_S = (0.02, 0.2)  # first and longest pause between reads of a result not yet stored


class StiClient:
    def __init__(self, broker_url: str | None = None, result_backend: str | None = None) -> None:
        self.broker_url = broker_url or environment.broker_url()
        backend = result_backend or environment.result_backend(self.broker_url)
        self.redis = LiteRedis(self.broker_url)
        self.results = self.redis if backend == self.broker_url else LiteRedis(backend)

    def close(self) -> None:
        self.redis.close()
        self.results.close()

    def check_broker(self) -> None:
        """Raise BrokerUnreachable, naming the URL, unless the broker answers."""
        self.redis.ping()

    # submitting

    def submit_build(self, request: BuildRequest, say: Callable[[str], None] | None = None) -> str:
        """Enqueue a build; a SOURCE that is a path on this machine is uploaded (a directory
        after the build is queued: the worker reads it as it arrives). Returns once the upload
        is complete."""
        self.check_broker()
        local = Path(request.source).expanduser()
        if local.is_dir():  # it streams into the build: the worker does not see these files
            context = _context_of(local, request.context_dir)
            found = source_environment(context)
            scripts = source_scripts(context, _skip_within(local, context, request.exclude))
            request = replace(request.with_source_environment(found), source_scripts=scripts)
        elif local.is_file():  # an archive streams into the build as it is: read it here
            found = archive_environment(local, request.context_dir)
            request = request.with_source_environment(found)
        upload = self._source_upload(local, request.exclude) if local.exists() else None
        if upload and not upload.streams:
            request = replace(request, source=self._send(upload, local, say))
        elif upload:
            request = replace(request, source=str(upload.ref))
        if request.scripts_url and request.scripts_url.startswith("file://"):
            request = replace(request, scripts_url=self._upload_scripts(request.scripts_url, say))
        kwargs = request.task_keywords()
        build_id = request.build_id
        self._claim_id(build_id)
        if upload and upload.streams:
            upload.open()
        self.redis.lpush(SHARED_QUEUE, task_message(BUILD_TASK, build_id, kwargs, SHARED_QUEUE))
        if upload and upload.streams:
            self._send(upload, local, say)  # a failure reaches the worker too, which ends the build
        return build_id

    def _claim_id(self, build_id: str, kind: str = "build") -> None:
        """A build id names one build: a request submitted twice needs a new id. The kind is
        kept for a result Celery stores without one (a revoked task)."""
        if not self.redis.set(keys.submitted(build_id), kind, nx=True, ex=_SUBMITTED_EXPIRES_S):
            raise InvalidInput(f"build id {build_id} was already submitted; make a new request")

    def _source_upload(self, path: Path, exclude: tuple[str, ...]) -> SourceUpload:
        from sti_submit.manifests import ManifestCache
        from sti_submit.upload import SourceUpload

        history = ManifestCache(path, self.broker_url)
        return SourceUpload(self._store(), path, exclude, history)

    def _send(self, upload: SourceUpload, path: Path, say: Callable[[str], None] | None) -> str:
        uploaded = upload.send()
        if say and upload.delta:
            delta = upload.delta
            say(
                f"Uploaded the changes to {path} since {uploaded.ref.name} "
                f"({len(delta.changed)} entries, {len(delta.removed)} removed; "
                f"{uploaded.size} bytes) as {uploaded.ref.blob}"
            )
        elif say and uploaded.sent:
            say(f"Uploaded {path} ({uploaded.size} bytes) as {uploaded.ref.blob}")
        elif say:
            say(f"Already uploaded: {path} as {uploaded.ref.blob}")
        return str(uploaded.ref)

    def _upload_scripts(self, url: str, say: Callable[[str], None] | None) -> str:
        """The scripts of a file:// --scripts-url, uploaded: the worker cannot read them."""
        packed, names = pack_scripts(local_directory(url))
        digest, _ = self._store().put([packed])
        if say:
            say(f"Uploaded {', '.join(names)} of {url} as {digest}")
        return f"{UPLOADED_SCHEME}{digest}"

    def _store(self) -> BlobStore:
        return BlobStore(
            self.redis,
            expires_s=environment.upload_expires_s(),
            max_bytes=environment.upload_max_bytes(),
        )

    def submit_validate(self, request: ValidateRequest) -> str:
        return self._submit_checks(VALIDATE_TASK, "validate", request.to_json())

    def submit_usage(self, request: UsageRequest) -> str:
        if request.scripts_url and request.scripts_url.startswith("file://"):
            self.check_broker()
            request = replace(request, scripts_url=self._upload_scripts(request.scripts_url, None))
        return self._submit_checks(USAGE_TASK, "usage", request.to_json())

    def _submit_checks(self, task: str, kind: str, kwargs: dict[str, Any]) -> str:
        build_id = kwargs.pop("build_id")
        self.check_broker()
        self._claim_id(build_id, kind)
        self.redis.lpush(SHARED_QUEUE, task_message(task, build_id, kwargs, SHARED_QUEUE))
        return build_id

    # watching

    def state(self, build_id: str) -> str:
        return str(self._task_state(build_id)["status"])

    def _task_state(self, build_id: str) -> dict[str, Any]:
        return task_state(self.results.get(result_key(build_id)))

    def status(self, build_id: str) -> dict[str, Any]:
        """The result object once finished; before that build_id, state and phase."""
        self.check_broker()
        stored = self._task_state(build_id)
        if stored["status"] in READY_STATES:
            return self._result_of(build_id, stored).to_json()
        info = stored["result"] if isinstance(stored["result"], dict) else {}
        return {
            "build_id": build_id,
            "state": stored["status"],
            "phase": info.get("phase", _phase_for(stored["status"])),
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
        """The finished build's result object, waiting for it; past timeout, TimedOut."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause, longest = _RESULT_POLL_S
        while (stored := self._task_state(build_id))["status"] not in READY_STATES:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(f"no result for {build_id} within {timeout:g}s")
            time.sleep(pause)
            pause = min(pause * 2, longest)
        return self._result_of(build_id, stored)

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
        # a worker that has not claimed it yet ends it at once when it does
        request_cancel(self.redis, build_id, code, message, _CANCEL_EXPIRES_S)
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

    def _result_of(self, build_id: str, stored: dict[str, Any]) -> Result:
        submitted = self.redis.get(keys.submitted(build_id))
        kind = submitted.decode() if isinstance(submitted, bytes) else "build"
        kind = kind if kind in ("build", "validate", "usage") else "build"
        if stored["status"] == "SUCCESS" and isinstance(stored["result"], dict):
            return Result.from_json(stored["result"])
        if stored["status"] == "REVOKED":
            return Result.from_error(kind, build_id, Cancelled("the build was cancelled"))
        return Result.from_error(kind, build_id, error_for_failure(stored["result"]))


def _field(fields: dict[Any, Any], name: str) -> str | None:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        return None
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _phase_for(state: str) -> str:
    return {"PENDING": "queued", "STARTED": "claimed", "RETRY": "waiting"}.get(state, state.lower())


def _context_of(root: Path, context_dir: str | None) -> Path:
    """Where the build's source starts: the worker checks --context-dir, so one that would leave
    the directory finds nothing here."""
    if not context_dir:
        return root
    parts = Path(context_dir).parts
    if Path(context_dir).is_absolute() or ".." in parts:
        return root / ".sti-no-such-directory"
    return root.joinpath(*parts)


def _skip_within(root: Path, context: Path, exclude: tuple[str, ...]) -> Callable[[str], bool]:
    """The upload's ignore rules (relative to root) for paths relative to context."""
    skip = ignore_matcher(root, exclude)
    try:
        prefix = context.relative_to(root).as_posix()
    except ValueError:
        return skip
    prefix = "" if prefix == "." else f"{prefix}/"
    return lambda path: skip(f"{prefix}{path}")
