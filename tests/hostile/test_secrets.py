"""--build-env values, tried as someone who can read the broker's Redis or watch the workers'
task events (Flower, `celery events`) would: a multi-stage build through the queue, a second
build of the same tag waiting for the first (sti.build retries), and sti.build sent by another
Celery app with Celery's own kwargsrepr. The value shows in no Redis key once the build is past
its queued message, in no task event, in no worker log line and in no result, while the -e
values (part of the image, by design) still show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
from celery import Celery

from sti import keys
from sti.celery_protocol import HIDDEN, keywords_repr, task_message
from sti.errors import InvalidInput
from sti.model import BuildRequest, from_task_arguments, parse_build_env_options
from sti.wire import BUILD_TASK, SHARED_QUEUE
from sti_submit.client import StiClient
from tests.dockertools import temporary_image
from tests.images import SAVE_ARTIFACTS
from tests.queue_helpers import make_source, sti_submit, tar_gz_of
from tests.services import BIN, Worker
from tests.test_queue_secrets import keys_holding, value_of
from tests.test_queue_worker_lost import _wait_until_gone, _worker
from tests.test_queue_worker_lost import queue_url as queue_url  # a fixture: its own database

# an extended build's first stage: it waits a moment, so Redis can be read while the build runs
SLOW_BUILDER_PREPARE = """\
#!/bin/sh
set -e
echo "prepare: waiting"
sleep 2
cp -Rp /tmp/src/. /tmp/build/
echo "prepare: saw a token of ${#TOKEN} characters"
"""


@pytest.fixture
def slow_builder(api: docker.APIClient) -> Iterator[str]:
    files = {
        "/usr/bin/prepare": SLOW_BUILDER_PREPARE,
        "/usr/bin/run": "#!/bin/sh\n",
        "/usr/bin/save-artifacts": SAVE_ARTIFACTS,
    }
    with temporary_image(api, files, name="slow-builder") as tag:
        yield tag


class EventLog:
    """Every task event the broker carries while it listens, as `celery events` sees them."""

    def __init__(self, broker_url: str) -> None:
        self.events: list[dict[str, Any]] = []
        self._app = Celery("eavesdropper", broker=broker_url)
        self._connection = self._app.connection_for_read()
        self._receiver = self._app.events.Receiver(
            self._connection, handlers={"*": self.events.append}
        )
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30  # a worker's heartbeat: the subscription is live
        while not any(event["type"] == "worker-heartbeat" for event in list(self.events)):
            assert time.monotonic() < deadline, "no worker heartbeat seen on the event bus"
            time.sleep(0.1)

    def _listen(self) -> None:
        try:
            self._receiver.capture(limit=None, timeout=None, wakeup=False)
        except Exception:  # the connection closed under it: listening is over
            return

    def stop(self) -> list[dict[str, Any]]:
        time.sleep(1)  # the last events of the build are on their way
        self._receiver.should_stop = True
        self._thread.join(timeout=10)
        self._connection.release()
        return [event for event in self.events if event["type"].startswith("task-")]


@pytest.fixture
def event_log(broker_url: str, worker: Worker) -> Iterator[EventLog]:
    listening = EventLog(broker_url)
    yield listening
    listening.stop()


def _secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


def _log_lines(client: StiClient, build_id: str) -> list[str]:
    return [line for line, _ in _stream(client, build_id)]


def _stream(client: StiClient, build_id: str) -> list[tuple[str, str]]:
    raw = redis.Redis.from_url(client.broker_url)
    try:
        entries = raw.xrange(keys.log_stream(build_id))
    finally:
        raw.close()
    return [(fields.get(b"line", b"").decode(), entry.decode()) for entry, fields in entries]


def _wait_for_line(
    client: StiClient, build_ids: tuple[str, ...], text: str, timeout: float = 60
) -> None:
    """Until one of the builds' logs has a line with text (either may win the tag's lock)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for build_id in build_ids for line in _log_lines(client, build_id)]
        if any(text in line for line in lines):
            return
        assert time.monotonic() < deadline, f"no {text!r} in {lines}"
        time.sleep(0.05)


def _keys_holding_while(running: threading.Event, url: str, secret: bytes) -> list[str]:
    """Read every key over and over until running is cleared; the keys seen holding secret
    anywhere but in the body of a queued sti.build message (where it waits to be delivered)."""
    client = redis.Redis.from_url(url)
    seen: set[str] = set()
    try:
        while running.is_set():
            for key in client.scan_iter():
                if any(_exposes(item, secret) for item in _items(client, key)):
                    seen.add(key.decode())
            time.sleep(0.05)
    finally:
        client.close()
    return sorted(seen)


def _items(client: redis.Redis, key: bytes) -> list[bytes]:
    """The values a key holds, each whole (a queue's messages, a hash's values)."""
    kind = client.type(key)
    if kind == b"list":
        return client.lrange(key, 0, -1)
    if kind == b"hash":
        return [item for pair in client.hgetall(key).items() for item in pair]
    return [value_of(client, key)]


def _exposes(item: bytes, secret: bytes) -> bool:
    """Whether item holds secret, but for the body of an sti.build message (a queue's entry,
    or kombu's unacked record of one: [message, exchange, routing key])."""
    if secret not in item:
        return False
    try:
        found = json.loads(item)
    except ValueError:
        return True
    message = found[0] if isinstance(found, list) and found else found
    if not isinstance(message, dict) or message.get("headers", {}).get("task") != "sti.build":
        return True
    outside_the_body = {name: value for name, value in message.items() if name != "body"}
    return secret.decode() in json.dumps(outside_the_body)


def test_build_only_values_are_in_no_redis_key_event_log_or_result(
    worker: Worker,
    broker_url: str,
    images: dict[str, str],
    slow_builder: str,
    app_tag: str,
    event_log: EventLog,
    tmp_path: Path,
) -> None:
    secret, visible = _secret(), f"visible-{uuid.uuid4().hex}"
    client = StiClient(broker_url)
    try:
        request = BuildRequest(
            str(make_source(tmp_path)),
            slow_builder,
            app_tag,
            runtime_image=images["sti-fake"],  # two stages: a state handed from one to the next
            env={"VISIBLE": visible},
            build_env={"TOKEN": secret},
        )
        first = client.submit_build(request)
        # the same tag: this one waits for the first, and sti.build retries meanwhile
        second = client.submit_build(
            BuildRequest.from_json({**request.to_json(), "build_id": uuid.uuid4().hex})
        )
        _wait_for_line(client, (first, second), "prepare: waiting")
        running = threading.Event()
        running.set()
        found: list[str] = []
        scanner = threading.Thread(
            target=lambda: found.extend(_keys_holding_while(running, broker_url, secret.encode()))
        )
        scanner.start()
        try:
            results = [client.result(build_id, timeout=120) for build_id in (first, second)]
        finally:
            running.clear()
            scanner.join()
        assert [result.success for result in results] == [True, True], results
        for build_id in (first, second):
            said = "\n".join(_log_lines(client, build_id))
            assert f"saw a token of {len(secret)} characters" in said
        assert found == [], f"keys holding the build-only value while the builds ran: {found}"
        assert keys_holding(broker_url, secret.encode()) == [], "keys holding it afterwards"
    finally:
        client.close()
    events = event_log.stop()
    ours = [event for event in events if event.get("uuid") in (first, second)]
    assert any(event["type"] == "task-received" for event in ours)
    assert [event for event in events if secret in json.dumps(event)] == []
    assert secret not in worker.log()
    assert [secret in json.dumps(result.to_json()) for result in results] == [False, False]
    # -e is part of the image: it is shown as it always was, and the build-only names are too
    received = next(event for event in ours if event["type"] == "task-received")
    assert visible in received["kwargs"] and "TOKEN" in received["kwargs"]


def test_build_only_values_sent_by_another_celery_app_stay_out_of_the_workers_events(
    worker: Worker,
    broker_url: str,
    images: dict[str, str],
    app_tag: str,
    event_log: EventLog,
    http_server: tuple[str, Path],
    tmp_path: Path,
) -> None:
    base, root = http_server
    (root / "app.tar.gz").write_bytes(tar_gz_of(make_source(tmp_path)))
    secret = _secret()
    app = Celery("caller", broker=broker_url, backend=broker_url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    kwargs = {
        "source": f"{base}/app.tar.gz",
        "build_image": images["sti-fake"],
        "tag": app_tag,
        "build_env": {"TOKEN": secret},
    }
    sent = app.send_task("sti.build", kwargs=kwargs, queue="sti.builds")  # Celery's kwargsrepr
    try:
        result = sent.get(timeout=120)
    finally:
        app.close()
    assert result["success"] is True, result
    events = event_log.stop()
    from_workers = [event for event in events if event.get("hostname", "").startswith("sti-")]
    assert any(event["type"] == "task-received" for event in from_workers)
    assert [event for event in from_workers if secret in json.dumps(event)] == []
    assert secret not in worker.log()
    assert keys_holding(broker_url, secret.encode()) == []


def _kwargsrepr(kwargs: dict[str, Any]) -> str:
    """What sti-submit's message shows of its keywords to every event subscriber."""
    message = json.loads(task_message(BUILD_TASK, uuid.uuid4().hex, kwargs, SHARED_QUEUE))
    return str(message["headers"]["kwargsrepr"])


def test_sti_submits_message_shows_build_only_names_but_not_their_values() -> None:
    secret = _secret()
    shown = _kwargsrepr(
        {
            "source": f"https://ci:{secret}@git.example/app.git",
            "build_image": "acme/builder",
            "tag": "acme/app",
            "env": {"VISIBLE": "part-of-the-image"},
            "build_env": {"NPM_TOKEN": secret, "OTHER": f"x{secret}x"},
        }
    )
    assert secret not in shown
    assert "'NPM_TOKEN': '<hidden>'" in shown and "'OTHER': '<hidden>'" in shown
    assert "part-of-the-image" in shown  # -e is part of the image, by design


@pytest.mark.parametrize(
    "build_env",
    [["TOKEN=s3cr3t"], "TOKEN=s3cr3t", ("TOKEN", "s3cr3t"), {"TOKEN": ["s3cr3t"]}, 123],
    ids=["list", "string", "tuple", "nested", "number"],
)
def test_build_only_values_of_any_shape_are_hidden(build_env: object) -> None:
    """A message another app sent (the worker shows it the same way) may hold anything."""
    shown = keywords_repr({"build_env": build_env, "tag": "acme/app"})
    assert "s3cr3t" not in shown and "123" not in shown
    assert HIDDEN in shown and "acme/app" in shown


@pytest.mark.parametrize("build_env", ["TOKEN=s3cr3t", ["TOKEN=s3cr3t"], ("s3cr3t",)])
def test_a_malformed_build_env_is_refused_without_its_value(build_env: object) -> None:
    """The refusal is the build's result and a line of its log, both kept for a week."""
    kwargs = {"source": "https://h/x.git", "build_image": "b", "tag": "t", "build_env": build_env}
    with pytest.raises(InvalidInput, match="build_env must be an object") as refused:
        from_task_arguments(BuildRequest, (), kwargs, uuid.uuid4().hex)
    assert "s3cr3t" not in str(refused.value)


def test_keywords_of_no_mapping_are_shown_with_credentials_masked() -> None:
    shown = keywords_repr(["https://u:s3cr3t@host/x"])
    assert "s3cr3t" not in shown


def test_a_long_repr_is_cut_after_its_credentials_are_masked() -> None:
    """Cut first, a URL split at the cut would not be recognised and its token would show."""
    for padding in range(960, 1030, 7):
        kwargs = {"env": {"PAD": "p" * padding}, "source": "https://user:s3cr3t-t0ken@h/x.git"}
        shown = keywords_repr(kwargs)
        assert len(shown) <= 1024
        assert "s3cr3t" not in shown and "t0ken" not in shown


def test_a_build_whose_worker_died_is_not_run_again_from_values_kept_in_redis(
    queue_url: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """Running it again would need its build-only values, which no record in Redis keeps: it
    ends WorkerLost and says why (other builds still run again)."""
    secret = _secret()
    doomed = _worker(queue_url, "doomed-host", tmp_path)
    successor = None
    client = StiClient(queue_url)
    try:
        request = BuildRequest(
            str(make_source(tmp_path)),
            images["sti-fake-slow"],
            app_tag,
            env={"SLEEP": "30"},
            build_env={"TOKEN": secret},
        )
        build_id = client.submit_build(request)
        _wait_for_line(client, (build_id,), "prepare: started")
        assert keys_holding(queue_url, secret.encode(), settle_s=0) == []
        os.killpg(doomed.process.pid, signal.SIGKILL)
        doomed.process.wait()
        successor = _worker(queue_url, "doomed-host", tmp_path)
        result = client.result(build_id, timeout=120)
        assert result.error_code == "WorkerLost", result
        assert "its --build-env values were kept only by that worker" in result.error["message"]
        assert not [line for line in _log_lines(client, build_id) if "attempt 2" in line]
        assert keys_holding(queue_url, secret.encode()) == []
        assert _wait_until_gone(api, build_id) == []
    finally:
        client.close()
        for worker in (doomed, successor):
            if worker is not None and worker.process.poll() is None:
                worker.stop()


@pytest.mark.parametrize(
    "option",
    ["ghp_s3cr3tT0ken", "s3cr3t-t0ken==", "bad-name=s3cr3t"],
    ids=["no name", "base64 with padding, invalid name", "invalid name"],
)
def test_a_mistyped_build_env_option_is_refused_without_its_text(
    tmp_path: Path, option: str
) -> None:
    """`--build-env "$TOKEN"`, NAME= forgotten: the refusal goes to a terminal or a CI log."""
    done = sti_submit("build", str(tmp_path), "builder", "app", "--build-env", option)
    assert done.returncode == 2, done.stderr
    assert "--build-env option 1" in done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr


def test_a_build_env_value_is_taken_whole_commas_and_all() -> None:
    """-e splits "A=1,B=2" as the original did; a --build-env value is a secret, taken whole:
    split, the part after ",word=" became a variable whose name every event shows."""
    parsed = parse_build_env_options(["TOKEN=p4ss,word=x", "OTHER=a,B=b", "EMPTY="])
    assert parsed == {"TOKEN": "p4ss,word=x", "OTHER": "a,B=b", "EMPTY": ""}


def test_a_build_env_value_that_is_not_utf8_is_refused_without_its_value() -> None:
    """JSON lets a message carry a lone surrogate ("\\udcff"): encoding it raised a
    UnicodeEncodeError whose repr is the whole value, which Celery stores as the task's
    FAILURE for a week, sends in its task-failed event and logs."""
    kwargs = json.loads(
        json.dumps(
            {
                "source": "https://h/x.git",
                "build_image": "b",
                "tag": "t",
                "build_env": {"TOKEN": "s3cr3t\udcff"},
            }
        )
    )
    with pytest.raises(InvalidInput, match="TOKEN is not UTF-8 text") as refused:
        from_task_arguments(BuildRequest, (), kwargs, uuid.uuid4().hex)
    assert "s3cr3t" not in repr(refused.value) and refused.value.__context__ is None


def test_a_build_env_option_of_bytes_not_utf8_is_bad_input_not_a_traceback(
    tmp_path: Path,
) -> None:
    """A shell hands sti-submit any bytes; Python reads them as lone surrogates."""
    option = os.fsencode("TOKEN=s3cr3t") + b"\xff"
    done = subprocess.run(
        [str(BIN / "sti-submit"), "build", str(tmp_path), "builder", "app", "--build-env", option],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert b"Traceback" not in done.stderr and b"s3cr3t" not in done.stdout + done.stderr
