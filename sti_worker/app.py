"""The Celery app and its settings, read from the environment (see settings.py).

JSON only, and the reliability settings long build steps need: late acks, redelivery when a
worker dies, one message prefetched per process, and a visibility timeout above the longest step.
"""

from __future__ import annotations

import sys

from celery import Celery
from kombu import Queue

from sti.environment import InvalidSetting
from sti.errors import ExitCode
from sti.redis_tls import celery_tls_settings
from sti.settings import Settings
from sti.wire import BUILD_TASK, JSON_ONLY, SHARED_QUEUE, VALIDATE_TASK

from . import kombu_fixes

kombu_fixes.apply()  # a broker restart must not stop a worker with a slot free
try:
    settings = Settings.from_env()
except InvalidSetting as error:  # one line, not Celery's traceback of a module it cannot load
    print(f"sti-worker: {error.message}", file=sys.stderr)
    raise SystemExit(ExitCode.BAD_INPUT) from None

app = Celery("sti", broker=settings.broker_url, backend=settings.result_backend)
app.conf.update(
    **JSON_ONLY,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_track_started=True,
    result_expires=settings.result_expires_s,
    task_time_limit=settings.step_time_limit_s,
    # the soft limit lets a step record TimedOut and the chain clean up before the hard kill
    task_soft_time_limit=settings.step_time_limit_s
    - min(30, max(1, settings.step_time_limit_s // 10)),
    broker_transport_options={"visibility_timeout": settings.step_time_limit_s + 600},
    result_backend_transport_options={"visibility_timeout": settings.step_time_limit_s + 600},
    task_default_queue=SHARED_QUEUE,
    task_queues=[Queue(SHARED_QUEUE), Queue(settings.host_queue)],
    task_routes={BUILD_TASK: {"queue": SHARED_QUEUE}, VALIDATE_TASK: {"queue": SHARED_QUEUE}},
    task_create_missing_queues=True,
    broker_connection_retry_on_startup=True,
    # A broker outage: a running step goes on (its build needs only the Docker engine) and its
    # message, restored by kombu, is delivered again; StepOnce (tasks.py) makes that copy wait
    # and return the step's output instead of running it twice. Cancelling it instead made
    # Celery announce the step revoked, which ended the build.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    # ...and what the step then writes (its result, the next step's message) waits for the
    # broker to be back instead of failing the build.
    result_backend_always_retry=True,
    result_backend_max_retries=40,
    task_publish_retry_policy={
        "max_retries": 60,
        "interval_start": 0.5,
        "interval_step": 0.5,
        "interval_max": 3,
    },
    worker_hijack_root_logger=False,
    worker_send_task_events=True,
    task_send_sent_event=True,
    **celery_tls_settings(settings.broker_url, settings.result_backend),
)
