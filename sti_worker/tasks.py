"""Public tasks (sti.build, sti.validate, sti.usage) and the host-pinned steps a build is
replaced by.

sti.build claims a build for this host (a slot here, the lock of its tag) and replaces itself
with a chain of sti.step tasks on this host's queue; the last one also finishes the build (what
sti.finish does) and carries the original task id, so AsyncResult(build id) and a caller's own
chain get the result object. sti.finish stays a task of its own for chains already queued.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis
import structlog
from celery import Task, chain
from celery.exceptions import Ignore

from sti import keys
from sti.cancel_flags import cancel_requested, request_cancel
from sti.celery_protocol import keywords_repr
from sti.errors import InternalError, InvalidInput, StiError, WorkerLost
from sti.failures import error_for_failure
from sti.leases import (
    MAX_ATTEMPTS,
    Attempt,
    HostSlots,
    RunningBuilds,
    StepOnce,
    TagLock,
    attempt_number,
    claimed_hosts,
)
from sti.model import (
    BuildRequest,
    Result,
    UsageRequest,
    ValidateRequest,
    check_build_id,
    from_task_arguments,
    is_build_id,
    validate_tag,
)
from sti.upload_refs import SCHEME as UPLOAD_SCHEME
from sti.upload_refs import UploadRef
from sti.wire import (
    ABORT_TASK,
    BUILD_TASK,
    CLEANUP_TASK,
    FINISH_TASK,
    SHARED_QUEUE,
    STEP_TASK,
    USAGE_TASK,
    VALIDATE_TASK,
    host_queue,
)

from .app import app, settings
from .cancellation import StepWatcher
from .engine.docker_host import DockerHost
from .engine.pipeline import (
    BuildState,
    Workbench,
    attempt_name,
    cleanup,
    cleanup_build,
    result_of,
    run_step,
    run_usage,
    run_validate,
    stages_for,
    steps_for,
)
from .engine.sources import is_git_url
from .housekeeping import tidy_in_background
from .resources import blob_store, build_log, docker_host, redis_client, sources
from .shown_requests import KeywordsHidden
from .state_seal import seal, unseal

PROGRESS = "PROGRESS"
_log = structlog.stdlib.get_logger(__name__)
_CLAIM_RETRY_S = 1.0
_STEP_BUSY_RETRY_S = 5.0
_TRIM_EVERY_S = 60


def _tag_lock(tag: str, attempt: Attempt) -> TagLock:
    return TagLock.of_build(redis_client(), tag, attempt, settings.lease_s)


def _host_slots(host_id: str | None = None) -> HostSlots:
    return HostSlots(redis_client(), host_id or settings.host_id, settings.lease_s)


def _running_builds() -> RunningBuilds:
    return RunningBuilds(redis_client(), settings.lease_s)


def mark_phase(build_id: str, phase: str) -> None:
    """Show the coarse phase as the state of the build id while the chain runs."""
    meta = {"build_id": build_id, "phase": phase, "host": settings.host_id}
    app.backend.store_result(build_id, meta, PROGRESS)


def _host_sig(sig: Any) -> Any:
    return sig.set(queue=settings.host_queue)


def _ended_early(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The one place a public task turns an error raised before (or instead of) its work into
    its result object, said in the build's log when the build id is one a log can have."""

    def decorate(task: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(task)
        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            build_id = self.request.id
            try:
                return task(self, *args, **kwargs)
            except StiError as error:
                if is_build_id(build_id):
                    buildlog = build_log(build_id)
                    buildlog.write(f"{kind.capitalize()} ended before it started: {error.message}")
                    buildlog.end()
                result = Result.from_error(kind, str(build_id), error, host=settings.host_id)
                return result.to_json()

        return run

    return decorate


@app.task(name=VALIDATE_TASK, bind=True)
@_ended_early("validate")
def validate(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments: build_image, incremental=False, runtime_image=None."""
    request = from_task_arguments(ValidateRequest, args, kwargs, self.request.id)
    docker = docker_host()  # before the log: an unreachable engine ends the log once, above
    build = build_log(request.build_id)
    try:
        return run_validate(docker, request, build.write, settings.host_id).to_json()
    finally:
        build.end()


@app.task(name=USAGE_TASK, bind=True)
@_ended_early("usage")
def usage(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments: build_image, scripts_url=None."""
    request = from_task_arguments(UsageRequest, args, kwargs, self.request.id)
    docker = docker_host()
    build = build_log(request.build_id)
    try:
        return run_usage(
            docker,
            request,
            build.write,
            settings.host_id,
            sources=sources(),
            max_output_bytes=settings.usage_max_bytes,
        ).to_json()
    finally:
        build.end()


@app.task(name=BUILD_TASK, bind=True, max_retries=None, Request=KeywordsHidden)
@_ended_early("build")
def build(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Keyword arguments: those of BuildRequest but build_id (the task's id); env and exclude
    may be null."""
    defaults = {"env": {}, "exclude": []}
    given = {
        name: defaults[name] if value is None and name in defaults else value
        for name, value in kwargs.items()
    }
    request = from_task_arguments(BuildRequest, args, given, self.request.id)
    build_id = request.build_id
    cancelled = cancel_requested(redis_client(), build_id)
    if cancelled:
        raise cancelled
    buildlog = build_log(build_id)
    attempt = _claim(self, request, buildlog.write)
    if not attempt:  # Celery's own kwargsrepr would show the --build-env values
        raise self.retry(
            countdown=_CLAIM_RETRY_S, max_retries=None, kwargsrepr=keywords_repr(kwargs)
        )
    buildlog.write(f"Build {build_id} claimed by host {settings.host_id}")
    mark_phase(build_id, "claimed")
    if attempt > 1:  # what earlier attempts left on this host is stale
        _clean_up_attempts(_reachable_docker(buildlog.write), build_id, range(1, attempt))
    first = BuildState(request=request, host=settings.host_id, attempt=attempt, stage=0)
    state = seal(first.to_json())
    stages = stages_for(request)
    signatures = []
    for number, stage in enumerate(stages):
        arguments = (state,) if number == 0 else ()  # later stages get it from the one before
        # the last stage finishes the build in the same task: a hop less than sti.finish
        finish = number == len(stages) - 1
        step = run_build_steps.s(*arguments, steps=stage, finish=finish)
        # the sealed state as the events show it: its ciphertext is no use to a reader
        step.set(argsrepr=f"(<sealed state of build {build_id}>,)")
        signatures.append(_host_sig(step))
    pipeline = chain(*signatures)
    abort = abort_build.si(build_id=build_id, tag=request.tag, attempt=attempt)
    pipeline.link_error(_host_sig(abort))
    return self.replace(pipeline)


def _claim(task: Task, request: BuildRequest, say: Callable[[str], None]) -> int:
    """Take a build slot on this host and the tag's lock, or neither; returns the build's
    attempt (0: not claimed). A claim of an attempt sti never writes ends the build."""
    attempt = Attempt(request.build_id, _running_builds().attempt_of(request.build_id))
    if _running_builds().is_over(attempt):  # a copy delivered late: the build ended, or reran
        _log.warning("a late copy of the build's task ends with no effect", attempt=attempt.number)
        raise Ignore()
    slots = _host_slots()
    if not slots.claim(request.build_id):
        return 0
    lock = _tag_lock(request.tag, attempt)
    if lock.acquire():
        return _running_builds().start(
            request.build_id,
            settings.host_id,
            request.tag,
            settings.result_expires_s,
            json.dumps(_kept_for_a_rerun(request)),
        )
    slots.release(attempt)
    holder = lock.holder()
    if task.request.retries == 0 or task.request.retries % 30 == 0:
        say(f"Waiting for build {holder} of {request.tag} to finish")
    return 0


def _kept_for_a_rerun(request: BuildRequest) -> dict[str, Any]:
    """The keywords the build's claim keeps while it runs, to run it again if its worker dies:
    every submitter can read them. Build-only values are not kept (their names are, which
    makes the build one that is not run again): they live in the queued message and in the
    running steps' memory alone, and the sealed states between them."""
    keywords = request.task_keywords()
    if request.build_env:
        keywords["build_env"] = sorted(request.build_env)
    return keywords


# a step's output (the next one's input) travels in the chain's messages; only failures are
# stored, for sti.abort to read; the last step (finish=True) stores the result object itself
@app.task(name=STEP_TASK, bind=True, ignore_result=True, store_errors_even_if_ignored=True)
def run_build_steps(
    self: Task, sealed: dict[str, Any], *, steps: list[str], finish: bool = False
) -> dict[str, Any]:
    build = BuildState.from_json(unseal(sealed))
    request = build.request
    known = [name for name, _ in steps_for(request)]
    if not isinstance(steps, list) or not steps or any(step not in known for step in steps):
        raise InvalidInput(f"steps must be a list of steps of this build: {known}")
    if not isinstance(finish, bool):
        raise InvalidInput("finish must be true or false")
    _check_stage(build, steps, finish)
    structlog.contextvars.bind_contextvars(build_id=request.build_id, step=",".join(steps))
    _ignore_if_stale(build)
    _ignore_unless_it_begins(self, build)
    if build.failed and not finish:
        return _sealed_for_the_next_stage(build)

    def work(once: StepOnce) -> dict[str, Any]:
        after = build if build.failed else _run_steps(self, build, steps, once)
        return _finish(after) if finish else _sealed_for_the_next_stage(after)

    output = _once(self, work)
    if finish:
        _tidy_after_the_result()
    return output


def _check_stage(build: BuildState, steps: list[str], finish: bool) -> None:
    """The steps and finish a message gives a state are those of the stage the state is the
    input of: a state sent again with others (a captured one) does nothing."""
    if build.stage is None:  # sealed before stages were counted: a chain queued then
        return
    stages = stages_for(build.request)
    last = len(stages) - 1
    expected = stages[build.stage] if 0 <= build.stage <= last else None
    if steps != expected or finish != (build.stage == last):
        raise InvalidInput(
            f"steps {steps} (finish {finish}) are not stage {build.stage} of this build: {stages}"
        )


def _sealed_for_the_next_stage(build: BuildState) -> dict[str, Any]:
    stage = None if build.stage is None else build.stage + 1
    return seal(replace(build, stage=stage).to_json())


def _ignore_unless_it_begins(task: Task, build: BuildState) -> None:
    """A copy of a stage that another task began, or of an earlier stage (a captured state sent
    again with a task id of its own, a chain made twice by a copy of sti.build), ends with no
    effect, touching nothing: the attempt runs, under the same names."""
    if build.stage is None or _running_builds().begin_stage(
        _attempt(build), build.stage, task.request.id
    ):
        return
    _log.warning("a copy of a stage that began already ends with no effect", stage=build.stage)
    raise Ignore()


def _ignore_if_stale(build: BuildState) -> None:
    """A step or finish of an attempt whose worker was taken for dead (a copy delivered late,
    or a worker cut off longer than its lease) removes what it made and ends its chain, with
    no other effect: the build runs again as a later attempt (or ended), which owns the build
    id's leases and result now, and whose work it cannot touch (see attempt_name)."""
    if not _owns_build(build):
        cleanup(_reachable_docker(_log.warning), build)
        raise Ignore()


def _attempt(build: BuildState) -> Attempt:
    return Attempt(build.request.build_id, build.attempt)


def _owns_build(build: BuildState) -> bool:
    """Whether this attempt still owns its build, which keeps it so for a lease: a reaper
    takes the build only from an attempt that stops renewing. A state older than a claim
    lives (a message replayed after the claim that would say it ended expired) owns nothing."""
    if time.time() - build.started_at < settings.result_expires_s and _running_builds().renew(
        _attempt(build)
    ):
        return True
    claim = _claim_as_said(build.request.build_id)
    _log.warning(
        "an earlier attempt of the build ends with no effect",
        attempt=build.attempt,
        current=claim.get("attempt"),
        taken=claim.get("taken"),
    )
    return False


def _once(task: Task, work: Callable[[StepOnce], dict[str, Any]]) -> dict[str, Any]:
    """Run work once for this task id (see StepOnce): a copy delivered again while it runs
    waits, a copy delivered after it ran returns its output."""
    once = StepOnce(redis_client(), task.request.id, settings.lease_s)
    earlier = _kept_output(once.output(), task.request.id)
    if earlier is not None:
        return earlier
    if not once.begin():
        raise task.retry(countdown=_STEP_BUSY_RETRY_S, max_retries=None)
    try:
        output = work(once)
    except BaseException:
        once.release()
        raise
    kept = seal({"task_id": task.request.id, "output": output})
    once.end(json.dumps(kept), settings.result_expires_s)
    return output


def _kept_output(kept: str | None, task_id: str) -> dict[str, Any] | None:
    """The output a run of this task kept, sealed with its task id: anyone can write the key
    (the last stage's task id is the build id, known before it runs), and an output this
    host's workers did not seal for this task is none (the step runs, and keeps its own)."""
    if kept is None:
        return None
    try:
        opened = unseal(json.loads(kept))
    except (ValueError, InvalidInput):  # not JSON, not sealed, sealed elsewhere
        _log.warning("a step's kept output is not this host's: the step runs")
        return None
    if opened.get("task_id") != task_id or not isinstance(opened.get("output"), dict):
        _log.warning("a step's kept output is another task's: the step runs")
        return None
    return dict(opened["output"])


def _run_steps(task: Task, build: BuildState, steps: list[str], once: StepOnce) -> BuildState:
    request = build.request
    buildlog = build_log(request.build_id)
    deliveries = _count_delivery(task)
    if deliveries > settings.max_deliveries:
        error = InternalError(
            f"step {steps[0]} was delivered {deliveries} times; its worker keeps dying"
        )
        return build.fail(error, buildlog.write)
    try:
        docker = docker_host()
    except StiError as error:  # the engine is unreachable: the build ends with that error
        return build.fail(error, buildlog.write)
    functions = dict(steps_for(request))
    bench = Workbench(
        docker, sources(), buildlog.write, check_may_tag=lambda: _check_may_tag(build)
    )

    def renew() -> StiError | None:
        once.renew()
        return _renew_leases(build)

    after = build
    with StepWatcher(
        redis_client(),
        request.build_id,
        renew=renew,
        abort=lambda: docker.abort(build.attempt_name),
        renew_every_s=max(settings.lease_s / 4, 1),
    ) as watcher:
        for step in steps:
            if after.failed:
                break
            cancelled = watcher.cancelled or cancel_requested(redis_client(), request.build_id)
            if cancelled is not None:
                after = after.fail(cancelled, buildlog.write)
                break
            mark_phase(request.build_id, step)
            before, after = after, run_step(step, functions[step], bench, after)
            if watcher.cancelled is not None and not after.tagged:
                # what the interrupted step left is not trusted; cleanup finds it by build id
                steps_run = after.to_json()["steps"]
                after = BuildState.from_json({**before.to_json(), "steps": steps_run})
                after = after.fail(watcher.cancelled, buildlog.write)
                break
    lost = _renew_leases(build)
    if lost is not None and not after.failed and not after.tagged:
        after = after.fail(lost, buildlog.write)
    # the first stage fetched the source (or the build failed): its credentials go no further
    return after.without_credentials()


def _tidy_after_the_result() -> None:
    """After _finish stored the result (the client has it): the source images beyond the
    limit removed, and the engine's build cache trimmed unless a worker of this host did in the
    last minute (a prune deletes hundreds of MB at a time and takes seconds of disk, so a busy
    host trims once a minute: the cache can outgrow its limit by what a minute of builds adds).
    Never raises: the build is over, and a failing task here would be taken for a broken chain."""
    try:
        key = keys.cache_trimmed(settings.host_id)
        trim = redis_client().set(key, 1, nx=True, ex=_TRIM_EVERY_S)
        tidy_in_background(lambda: _reachable_docker(_log.warning), trim_cache=bool(trim))
    except Exception:  # housekeeping: the next result asks again
        _log.warning("could not start housekeeping", exc_info=True)


@app.task(name=FINISH_TASK, bind=True)
def finish_build(self: Task, sealed: dict[str, Any]) -> dict[str, Any]:
    """What the last sti.step does now; kept for chains queued before it did."""
    build = BuildState.from_json(unseal(sealed))
    if build.stage is not None:  # a state of today's chains: sti.step finishes those
        raise InvalidInput("sti.finish takes the state of a chain queued before sti.step finished")
    structlog.contextvars.bind_contextvars(build_id=build.request.build_id)
    _ignore_if_stale(build)
    output = _once(self, lambda once: _finish(build))
    _tidy_after_the_result()
    return output


def _finish(build: BuildState) -> dict[str, Any]:
    request = build.request
    buildlog = build_log(request.build_id)
    owned = _owns_build(build)  # asked first: the build stays this attempt's for a lease
    try:
        cleanup(_reachable_docker(buildlog.write), build)  # what this attempt made, only
    finally:
        # the one that ends the attempt stores its result (an sti.abort may race this)
        ended = owned and _release_leases(_attempt(build), request.tag)
    if not ended:
        raise Ignore()
    result = result_of(build)
    # stored before the log ends, so a client that sees the end reads the result at once
    app.backend.store_result(request.build_id, result.to_json(), "SUCCESS")
    buildlog.write(_outcome_line(result))
    buildlog.end()
    if build.attempt > 1:
        _clean_up_elsewhere(request.build_id, skip=settings.host_id)
    return result.to_json()


def _claim_as_said(build_id: str) -> dict[str, str]:
    """The build's claim, for saying what it holds: empty when it is not one sti writes."""
    try:
        return _running_builds().claim_of(build_id)
    except InternalError as error:
        _log.warning("the build's claim is not trusted", error=error.message)
        return {}


def _clean_up_elsewhere(build_id: str, skip: str | None = None) -> None:
    """Have every host the build ran on (but skip) remove what it left there: sti.cleanup waits
    in a host's queue until a worker serves that host again."""
    for host_id in set(claimed_hosts(_claim_as_said(build_id))) - {skip}:
        app.send_task(
            CLEANUP_TASK,
            kwargs={"build_id": build_id},
            queue=host_queue(host_id),
            expires=settings.result_expires_s,
        )


@app.task(name=ABORT_TASK, bind=True)
def abort_build(
    self: Task, *failed_task: str, build_id: str, tag: str, attempt: int | None = None
) -> dict[str, Any]:
    """The chain broke (hard time limit, revoked step): clean up what the chain's attempt made
    and record a final result, unless a later attempt owns the build now (it runs again)."""
    check_build_id(build_id)
    validate_tag(tag)
    # a chain queued before attempts were given is the current attempt's
    number = _running_builds().attempt_of(build_id) if attempt is None else attempt
    name = attempt_name(build_id, number)
    buildlog = build_log(build_id)
    docker = _reachable_docker(buildlog.write)
    owned = _running_builds().renew(Attempt(build_id, number))
    try:
        cleanup_build(docker, name)
    finally:
        # the one that ends the attempt stores its result (the chain's finish may race this)
        ended = owned and _release_leases(Attempt(build_id, number), tag)
    if not ended:
        _log.warning("the chain's attempt ended, or another owns the build", attempt=name)
        raise Ignore()
    error = _failure_of(failed_task[0] if failed_task else None)
    result = Result.from_error("build", build_id, error, host=settings.host_id, tag=tag)
    app.backend.store_result(build_id, result.to_json(), "SUCCESS")
    buildlog.write(_outcome_line(result))
    buildlog.end()
    _tidy_after_the_result()
    return result.to_json()


def _failure_of(task_id: str | None) -> StiError:
    if task_id is None:
        return InternalError("a build step was lost")
    return error_for_failure(app.AsyncResult(task_id).result)


def _reachable_docker(say: Callable[[str], None]) -> DockerHost | None:
    """The engine, for cleaning up; None (the work dir is still removed) when it is
    unreachable, so a build whose engine went away still gets its final result."""
    try:
        return docker_host()
    except StiError as error:
        say(f"Could not clean up on the Docker engine: {error.message}")
        return None


def _count_delivery(task: Task) -> int:
    key = keys.deliveries(task.request.id, task.request.retries or 0)
    client = redis_client()
    try:
        count = int(client.incr(key))
    except redis.ResponseError:  # not a count (anyone can write the key): counted anew
        client.delete(key)
        count = int(client.incr(key))
    client.expire(key, settings.result_expires_s)
    return count


def _renew_leases(build: BuildState) -> StiError | None:
    """Renew what the attempt owns (see sti.leases): nothing, once another attempt owns it.
    The error the build ends with when another build took its tag's lock (its worker did not
    renew it for longer than the lease): then only one of them may tag."""
    attempt = _attempt(build)
    _host_slots().renew(attempt)
    owned = _running_builds().renew(attempt)
    lock = _tag_lock(build.request.tag, attempt)
    if lock.renew() or not owned:  # one no longer owned ends with no effect instead
        return None
    return InternalError(
        f"build {lock.holder()} of {build.request.tag} took the tag's lock while this build's "
        f"worker did not renew it for longer than its lease (STI_LEASE_SECONDS, "
        f"{settings.lease_s}s): this build tags nothing"
    )


def _check_may_tag(build: BuildState) -> None:
    """Right before tagging: the attempt owns its build and its tag's lock (for a lease more)."""
    if not _owns_build(build):
        raise InternalError(
            f"attempt {build.attempt} of the build no longer owns it (a reaper took it for lost, "
            "and it runs again, or it ended): this one tags nothing"
        )
    lost = _renew_leases(build)
    if lost is not None:
        raise lost


def _release_leases(attempt: Attempt, tag: str | None, host_id: str | None = None) -> bool:
    """What the attempt holds (the lock of its tag, if its claim names one sti writes); True
    for the one caller that ended it."""
    try:
        _host_slots(host_id).release(attempt)
        if tag is not None:
            _tag_lock(tag, attempt).release()
    finally:  # last, whatever happened: the attempt owns nothing once it ended
        ended = _running_builds().end(attempt)
    return ended


def _clean_up_attempts(docker: DockerHost | None, build_id: str, numbers: range) -> None:
    for number in numbers:
        cleanup_build(docker, attempt_name(build_id, number))


def end_lost_build(build_id: str) -> None:
    """Handle a build whose worker died (its lease ran out, see reaper.py), once, from any host.

    A build that has not run again yet and whose source can still be fetched anywhere (an
    upload still stored, a URL) runs again from the start, on any live host, as attempt 2:
    steps of attempt 1 delivered later end with no effect, and attempt 2's finish has the hosts
    of attempt 1 remove what it left. Otherwise its final result is WorkerLost, a copy of one
    of its steps delivered later finds it cancelled, and its hosts remove what it left
    (sti.cleanup waits in a host's queue while the host is down)."""
    builds = _running_builds()
    claim: dict[str, str] = {}
    try:
        claim = builds.claim_of(build_id)
        taken = Attempt(build_id, attempt_number(claim.get("attempt")), taken=True)
    except InternalError as error:  # not trusted: what it holds is left to run out
        _end_lost_build_with(error, build_id, *_host_and_tag(claim))
        return
    host_id, tag = _host_and_tag(claim)
    lost = (
        f"the worker running build {build_id} on host {host_id or '(not named)'} stopped "
        "before the build ended (its lease ran out)"
    )
    keywords = _rerunnable(claim, taken.number)
    if keywords is None and _had_build_only_values(claim):
        lost += (
            "; it is not run again, as its --build-env values were kept only by that worker: "
            "submit it again"
        )
    _release_leases(taken, tag, host_id)
    buildlog = build_log(build_id)
    if keywords is not None:
        attempt = builds.rerun(build_id)
        buildlog.write(f"{lost.capitalize()}: building it again from the start (attempt {attempt})")
        mark_phase(build_id, "queued again")
        app.send_task(
            BUILD_TASK,
            kwargs=keywords,
            task_id=build_id,
            queue=SHARED_QUEUE,
            kwargsrepr=keywords_repr(keywords),
        )
        return
    _end_lost_build_with(WorkerLost(lost), build_id, host_id, tag)


def _host_and_tag(claim: dict[str, str]) -> tuple[str | None, str | None]:
    """The host and tag a lost build's claim names, those sti writes (for its log and result:
    anyone can write a claim); None for others."""
    host_id, tag = claim.get("host"), claim.get("tag")
    try:
        validate_tag(tag or "")
    except InvalidInput:
        tag = None
    return (host_id if keys.is_host_id(host_id) else None), tag


def _end_lost_build_with(
    error: StiError, build_id: str, host_id: str | None, tag: str | None
) -> None:
    """The final result of a lost build: a copy of one of its steps delivered later finds it
    cancelled, and its hosts remove what it left."""
    request_cancel(redis_client(), build_id, error.code, error.message, settings.result_expires_s)
    _clean_up_elsewhere(build_id)
    result = Result.from_error("build", build_id, error, host=host_id, tag=tag)
    app.backend.store_result(build_id, result.to_json(), "SUCCESS")
    buildlog = build_log(build_id)
    buildlog.write(error.message)
    buildlog.write(_outcome_line(result))
    buildlog.end()


def _rerunnable(claim: dict[str, str], attempt: int) -> dict[str, Any] | None:
    """The task keywords to build again with, if the build ran once and its source can be
    fetched on any host: an upload the store still has, a URL (a path, or a file:// URL, is
    one worker's own disk)."""
    if attempt >= MAX_ATTEMPTS or "request" not in claim:
        return None
    try:
        keywords = json.loads(claim["request"])
        source = str(keywords["source"])
    except (ValueError, KeyError, TypeError):
        return None
    if _had_build_only_values(claim):
        return None
    if source.startswith(UPLOAD_SCHEME):
        try:
            stored = all(map(blob_store().has, UploadRef.parse(source).blobs))
        except StiError:
            return None
        return keywords if stored else None
    anywhere = is_git_url(source) and not source.startswith("file://")  # http(s) archives too
    return keywords if anywhere else None


def _had_build_only_values(claim: dict[str, str]) -> bool:
    """Whether the claim kept only the names of build-only values (see _kept_for_a_rerun)."""
    try:
        return isinstance(json.loads(claim["request"]).get("build_env"), list)
    except (ValueError, KeyError, AttributeError):
        return False


@app.task(name=CLEANUP_TASK)
def cleanup_lost_build(*, build_id: str) -> None:
    """Remove what a build whose worker died left on this host (containers, tags, work dir),
    of every attempt but one that runs now: sti sends this once the build ended, anyone else
    may send it any time."""
    check_build_id(build_id)
    try:
        running = _running_builds().running_attempt(build_id)
    except InternalError as error:  # a claim sti never writes names no attempt
        _log.warning("the build's claim is not trusted", error=error.message)
        running = None
    if running is not None:
        _log.warning("sti.cleanup leaves the attempt that runs", attempt=running)
    docker = _reachable_docker(lambda line: _log.warning(line, build_id=build_id))
    for number in range(1, MAX_ATTEMPTS + 1):
        if number != running:
            cleanup_build(docker, attempt_name(build_id, number))


def _outcome_line(result: Result) -> str:
    if result.success:
        return f"Build {result.build_id} succeeded: {result.tag} is {result.image_id}"
    return f"Build {result.build_id} failed: {result.error_code}"


__all__ = [
    "abort_build",
    "build",
    "cleanup_lost_build",
    "end_lost_build",
    "finish_build",
    "run_build_steps",
    "usage",
    "validate",
]
