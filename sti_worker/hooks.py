"""Cross-cutting worker concerns as Celery signal handlers: logging, log context, host
registration with a heartbeat, the reaper of builds whose worker died, and finishing builds
whose steps were revoked.

A failing hook is logged (Celery's Signal.send catches and logs what a receiver raises) and
never kills a build.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import celery.app.trace
import redis
import structlog
from celery import signals

from sti import keys
from sti.errors import InternalError
from sti.leases import HostSlots, RunningBuilds
from sti.wire import ABORT_TASK, FINISH_TASK, STEP_TASK

from .app import app, settings
from .brief_redis import brief_redis_client
from .engine.pipeline import attempt_name, build_id_of, cleanup_build, leftover_attempts
from .logs import configure_logging
from .reaper import Reaper
from .resources import docker_host, redis_client
from .state_seal import ForgedState, unseal

log = structlog.stdlib.get_logger(__name__)

_STEP_TASKS = (STEP_TASK, FINISH_TASK)
_heartbeat_stop = threading.Event()


def _end_lost_build(build_id: str) -> None:
    from .tasks import end_lost_build  # tasks imports this module's app; only needed later

    end_lost_build(build_id)


_reaper = Reaper(
    lambda: RunningBuilds(redis_client(), settings.lease_s), _end_lost_build, settings.lease_s
)


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    configure_logging(loglevel or "INFO")
    # Celery's "Task ... succeeded" line prints the task's return value: for a step, the whole
    # (sealed) build state, request included. The line is kept; the value is the result's, not
    # the log's. Celery reads this format from its module each time it logs.
    celery.app.trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


@signals.task_prerun.connect
def _bind_log_context(task_id: str, task: Any, args: Any, kwargs: Any, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    build_id = _build_id_of(task.name, task_id, args, kwargs, task.request)
    structlog.contextvars.bind_contextvars(
        task_id=task_id, task=task.name, build_id=build_id, host=settings.host_id
    )


@signals.task_postrun.connect
def _clear_log_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


@signals.worker_ready.connect
def _remove_what_crashed_builds_left(sender: Any, **_: Any) -> None:
    """A worker killed mid-build leaves containers and a work dir that no live lease owns.

    Runs before the host registers. Only builds this queue knows are touched: another sti on
    the same engine keeps its own.
    """
    for name in stale_attempts(redis_client(), leftover_attempts(docker_host())):
        log.warning("removing what a crashed build left", build_id=build_id_of(name), attempt=name)
        cleanup_build(docker_host(), name)


def stale_attempts(client: Any, names: Iterable[str]) -> list[str]:
    """Of these attempts (their names), those of builds this queue knows (they have a log)
    that do not run now: the build ended, or runs as another attempt. One look-up each, of
    the build's own keys."""
    registry = RunningBuilds(client, settings.lease_s)
    stale = []
    for name in sorted(names):
        build_id = build_id_of(name)
        if not client.exists(keys.log_stream(build_id)):
            continue
        try:
            running = registry.running_attempt(build_id)
        except InternalError:  # a claim sti never writes: no attempt runs by it
            running = None
        if running is None or attempt_name(build_id, running) != name:
            stale.append(name)
    return stale


@signals.worker_ready.connect
def _register_host(sender: Any, **_: Any) -> None:
    node = sender.hostname
    slots = int(sender.controller.concurrency)
    host = HostSlots(redis_client(), settings.host_id, settings.lease_s)
    host.register_node(node, slots)
    log.info("worker ready", node=node, slots=slots, host=settings.host_id)

    def beat() -> None:
        while not _heartbeat_stop.wait(max(settings.lease_s / 3, 1)):
            try:
                host.register_node(node, slots)
            except Exception:
                log.warning("heartbeat failed", node=node, exc_info=True)

    threading.Thread(target=beat, name="sti-heartbeat", daemon=True).start()
    _reaper.start()


@signals.worker_shutdown.connect
def _unregister_host(sender: Any, **_: Any) -> None:
    """Best effort, and brief: with the broker gone the node's entry runs out with its lease."""
    _heartbeat_stop.set()
    _reaper.stop()
    client = brief_redis_client(settings.broker_url)
    try:
        HostSlots(client, settings.host_id, settings.lease_s).unregister_node(sender.hostname)
    except redis.RedisError as error:
        log.warning("could not unregister from the broker", node=sender.hostname, error=str(error))
    finally:
        client.close()


@signals.task_revoked.connect
def _finish_revoked_build(request: Any, terminated: bool, expired: bool, **_: Any) -> None:
    """A revoked or expired step would leave its build unfinished: abort it on this host."""
    if request.task not in _STEP_TASKS:
        return
    state = _sealed_state(request.args)
    if state is None:
        return
    build = state["request"]
    reason = "expired" if expired else "revoked"
    log.warning("build step " + reason, build_id=build.get("build_id"), step=request.task)
    # the attempt's: a step of an earlier attempt aborts nothing of the one that runs now
    abort = {"build_id": build["build_id"], "tag": build["tag"], "attempt": state["attempt"]}
    app.send_task(ABORT_TASK, kwargs=abort, queue=settings.host_queue)


def _sealed_state(args: Any) -> dict[str, Any] | None:
    """A step's sealed state (its request and attempt); None for a state this host did not
    write."""
    try:
        state = dict(unseal(args[0] if args else None))
        return {"request": dict(state["request"]), "attempt": state.get("attempt", 1)}
    except (ForgedState, KeyError, TypeError, ValueError):
        return None


def _build_id_of(name: str, task_id: str, args: Any, kwargs: Any, request: Any) -> str | None:
    if name in _STEP_TASKS:
        return None  # in the sealed state: the task binds it once it has checked the seal
    if name == ABORT_TASK:
        return kwargs.get("build_id")
    return task_id
