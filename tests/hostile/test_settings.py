"""Settings an operator gets wrong: each variable has a range, and a value outside it (one that
does not parse, a zero where a count or a duration is needed, a negative, a typo of a choice or
a flag, a URL that is no URL) is refused with one line naming the variable and the value: the
worker stops at start with exit code 2, sti-submit with exit code 2, neither with a traceback.
Nothing is read as another value in silence.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from sti.environment import YEAR_S, InvalidSetting, upload_expires_s, upload_max_bytes
from sti.settings import Settings
from tests.services import BIN, free_port
from tests.unit.test_settings import no_sti_environment  # noqa: F401  (autouse: no STI_ variable)

REFUSED = [
    # durations (seconds): a zero, a negative, no number, a fraction, a unit, too long
    ("STI_LEASE_SECONDS", "abc", "is not a whole number"),
    ("STI_LEASE_SECONDS", "0", "less than the least it may be, 2"),
    ("STI_LEASE_SECONDS", "1", "less than the least it may be, 2"),
    ("STI_LEASE_SECONDS", "-60", "less than the least it may be, 2"),
    ("STI_LEASE_SECONDS", "60s", "is not a whole number"),
    ("STI_LEASE_SECONDS", "1e3", "is not a whole number"),
    ("STI_LEASE_SECONDS", "60.5", "is not a whole number"),
    ("STI_LEASE_SECONDS", "٦٠", "is not a whole number"),  # digits int() reads, not ASCII
    ("STI_LEASE_SECONDS", "6_0", "is not a whole number"),  # int() reads it as 60
    ("STI_STEP_TIME_LIMIT", "0", "less than the least it may be, 2"),
    ("STI_STEP_TIME_LIMIT", "1", "less than the least it may be, 2"),
    ("STI_STEP_TIME_LIMIT", str(YEAR_S + 1), f"more than the most it may be, {YEAR_S}"),
    ("STI_STEP_TIME_LIMIT", "9" * 30, "more than the most it may be"),
    ("STI_RESULT_EXPIRES", "0", "less than the least it may be, 60"),
    ("STI_RESULT_EXPIRES", "week", "is not a whole number"),
    ("STI_DOWNLOAD_TIMEOUT", "0", "less than the least it may be, 1"),
    ("STI_UPLOAD_STALL_TIMEOUT", "-1", "less than the least it may be, 1"),
    ("STI_UPLOAD_EXPIRES", "0", "less than the least it may be, 60"),
    ("STI_UPLOAD_EXPIRES", "abc", "is not a whole number"),
    # counts
    ("STI_SOURCE_MAX_FILES", "-1", "less than the least it may be, 1"),
    ("STI_SOURCE_MAX_FILES", "0", "less than the least it may be, 1"),
    ("STI_SOURCE_MAX_FILES", "100k", "is not a whole number"),
    ("STI_MAX_DELIVERIES", "0", "less than the least it may be, 1"),
    ("STI_LOG_MAX_LINES", "0", "less than the least it may be, 1"),
    ("STI_SOURCE_IMAGES_KEEP", "-1", "less than the least it may be, 0"),
    ("STI_SOURCE_IMAGES_KEEP", "ten", "is not a whole number"),
    ("STI_BUILD_PIDS", "-1", "less than the least it may be, 0"),
    # sizes
    ("STI_SOURCE_MAX_BYTES", "0", "less than the least it may be, 1"),
    ("STI_SOURCE_MAX_BYTES", "-1G", "is not a size"),
    ("STI_DOWNLOAD_MAX_BYTES", "0", "less than the least it may be, 1"),
    ("STI_UPLOAD_MAX_BYTES", "0", "less than the least it may be, 1"),
    ("STI_UPLOAD_MAX_BYTES", "lots", "is not a size"),
    ("STI_BUILD_CACHE_KEEP", "2 G", "is not a size"),
    ("STI_BUILD_MEMORY", "1M", "below the engine's least memory limit"),
    ("STI_BUILD_MEMORY", "5m", "below the engine's least memory limit"),
    ("STI_BUILD_MEMORY", "-1", "is not a size"),
    ("STI_LOG_MAX_BYTES", "1K", "less than the least it may be, 65536"),
    # choices and flags: a typo is not the default
    ("STI_BUILDER", "kaniko", "is not one of: auto, buildkit, legacy, container"),
    ("STI_BUILD_NETWORK", "host", "is not one of: bridge, none"),
    ("STI_BUILD_NETWORK", "container:abc", "is not one of: bridge, none"),
    ("STI_BUILD_PRIVILEGES", "privileged", "is not one of: restricted, engine"),
    ("STI_LOG_FORMAT", "jsonl", "is not one of: console, json"),
    ("STI_ALLOW_FILE_URLS", "ture", "is not a flag"),
    ("STI_ALLOW_LOCAL_SOURCES", "2", "is not a flag"),
    ("STI_ALLOW_INTERNAL_URLS", "enabled", "is not a flag"),
    # the host id names a queue, Redis keys and Celery nodes
    ("STI_HOST_ID", "build host", "is not a host id"),
    ("STI_HOST_ID", "a@b", "is not a host id"),
    ("STI_HOST_ID", "x:y", "is not a host id"),
    ("STI_HOST_ID", "h" * 129, "is not a host id"),
]

REFUSED_NAMING_A_PART = [
    ("STI_BROKER_URL", "redis://[::1", "redis://[::1 is not a valid Redis URL"),
    ("STI_BROKER_URL", "redis://broker:99999/0", "is not a valid Redis URL"),
    ("STI_BROKER_URL", "redis://broker:port/0", "is not a valid Redis URL"),
    ("STI_BROKER_URL", "redis://broker:0/0", "names port 0"),
    ("STI_BROKER_URL", "redis://broker/one", "is not a valid Redis URL"),
    ("STI_BROKER_URL", "redis://broker/-1", "is negative"),
    ("STI_BROKER_URL", "amqp://broker//", "is not a Redis URL"),
    ("STI_BROKER_URL", "broker:6379", "is not a Redis URL"),
    ("STI_BROKER_URL", "unix:///run/redis.sock", "is not a redis:// or rediss:// URL"),
    ("STI_BROKER_URL", "redis://broker/?db=2", "a worker takes it as the path"),
    ("STI_RESULT_BACKEND", "redis://broker:6379?db=1", "a worker takes it as the path"),
    ("STI_RESULT_BACKEND", "redis://[::1", "is not a valid Redis URL"),
    ("STI_RESULT_BACKEND", "rpc://", "is not a Redis URL"),
    ("STI_ALLOWED_NETWORKS", "10.0.0.0/33", "'10.0.0.0/33' is not a network"),
    ("STI_ALLOWED_NETWORKS", "10.20.0.0/16,git.internal", "'git.internal' is not a network"),
]


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [*REFUSED, *REFUSED_NAMING_A_PART],
)
def test_a_setting_outside_its_range_is_refused_naming_it_and_its_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSetting) as refused:
        Settings.from_env()
    # a URL or a list is shown by the part that is wrong (a URL without its password)
    named = f"{name}: " if (name, value, says) in REFUSED_NAMING_A_PART else f"{name}={value!r}"
    assert refused.value.message.startswith(named)
    assert says in refused.value.message
    assert "\n" not in refused.value.message


def test_a_refused_url_keeps_its_password_out_of_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, url in [
        ("STI_BROKER_URL", "redis://:s3cret@broker:99999/0"),
        ("STI_RESULT_BACKEND", "rediss://user:s3cret@broker/-1"),
        ("STI_BROKER_URL", "unix://:s3cret@/run/redis.sock"),
    ]:
        monkeypatch.setenv(name, url)
        with pytest.raises(InvalidSetting) as refused:
            Settings.from_env()
        assert "s3cret" not in refused.value.message
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("name", "value", "read"),
    [
        ("STI_LEASE_SECONDS", " 15 ", 15),
        ("STI_LEASE_SECONDS", "+15", 15),
        ("STI_LEASE_SECONDS", "", 60),
        ("STI_STEP_TIME_LIMIT", "2", 2),
        ("STI_SOURCE_IMAGES_KEEP", "0", 0),
        ("STI_BUILD_MEMORY", "0", 0),
        ("STI_BUILD_MEMORY", "6M", 6 * 1024**2),
        ("STI_BUILDER", " BuildKit ", "buildkit"),
        ("STI_ALLOW_FILE_URLS", "On", True),
        ("STI_ALLOW_FILE_URLS", "off", False),
        ("STI_ALLOW_FILE_URLS", "  ", False),
        ("STI_LOG_FORMAT", "JSON", "json"),
        ("STI_LOG_FORMAT", "", None),
    ],
)
def test_the_edges_of_each_range_are_read(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, read: object
) -> None:
    monkeypatch.setenv(name, value)
    field = {
        "STI_LEASE_SECONDS": "lease_s",
        "STI_STEP_TIME_LIMIT": "step_time_limit_s",
        "STI_SOURCE_IMAGES_KEEP": "source_images_keep",
        "STI_BUILD_MEMORY": "build_memory_bytes",
        "STI_BUILDER": "builder",
        "STI_ALLOW_FILE_URLS": "allow_file_urls",
        "STI_LOG_FORMAT": "log_format",
    }[name]
    assert getattr(Settings.from_env(), field) == read


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STI_UPLOAD_MAX_BYTES", "lots"),
        ("STI_UPLOAD_MAX_BYTES", "0"),
        ("STI_UPLOAD_EXPIRES", "abc"),
        ("STI_UPLOAD_EXPIRES", "-5"),
        ("STI_UPLOAD_EXPIRES", "0"),
    ],
)
def test_the_submitting_sides_upload_settings_have_the_same_ranges(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSetting, match=f"^{name}={value!r} "):
        upload_max_bytes() if name == "STI_UPLOAD_MAX_BYTES" else upload_expires_s()


def _run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """argv with env added to this environment (without its STI_ variables, and with a broker
    nobody listens on); a process that starts a worker instead of refusing is killed, its
    Celery too, and the test fails."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STI_")}
    environment.update({"STI_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0", **env})
    process = subprocess.Popen(
        argv, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{argv[0]} started instead of refusing its settings")
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ((), {"STI_LEASE_SECONDS": "abc"}, "STI_LEASE_SECONDS='abc' is not a whole number"),
        ((), {"STI_LEASE_SECONDS": "0"}, "STI_LEASE_SECONDS='0' is less than the least"),
        ((), {"STI_STEP_TIME_LIMIT": "0"}, "STI_STEP_TIME_LIMIT='0' is less than the least"),
        ((), {"STI_SOURCE_MAX_FILES": "-1"}, "STI_SOURCE_MAX_FILES='-1' is less than the least"),
        ((), {"STI_BROKER_URL": "redis://[::1"}, "STI_BROKER_URL: redis://[::1 is not a valid"),
        (("--broker", "redis://:pw@h:99999/0"), {}, "STI_BROKER_URL: redis://***@h:99999/0"),
        (("--host-id", "a b"), {}, "STI_HOST_ID='a b' (--host-id) is not a host id"),
        ((), {"DOCKER_HOST": "tcp://docker:99999"}, "DOCKER_HOST='tcp://docker:99999'"),
        (("--docker-url", "ftp://docker"), {}, "DOCKER_HOST='ftp://docker' (--docker-url)"),
        (("--docker-url", "tcp://"), {}, "DOCKER_HOST='tcp://' (--docker-url) is not a Docker"),
    ],
)
def test_sti_worker_refuses_to_start_with_a_setting_outside_its_range(
    args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    started = _run(str(BIN / "sti-worker"), *args, **env)
    assert started.returncode == 2, started.stderr
    assert started.stderr.startswith("sti-worker: ")
    assert says in started.stderr
    assert started.stderr.count("\n") == 1, started.stderr  # one line, no traceback
    assert "pw@" not in started.stderr


def test_celery_started_directly_on_the_app_refuses_the_same_way() -> None:
    """`celery -A sti_worker worker`, which the README calls equivalent."""
    started = _run(str(BIN / "celery"), "-A", "sti_worker", "worker", STI_LEASE_SECONDS="0")
    assert started.returncode == 2, started.stderr
    assert started.stderr.strip() == (
        "sti-worker: STI_LEASE_SECONDS='0' is less than the least it may be, 2"
    )


@pytest.mark.parametrize(
    ("env", "args", "says"),
    [
        ({"STI_BROKER_URL": "redis://[::1"}, ("status", "x"), "is not a valid Redis URL"),
        ({"STI_BROKER_URL": "redis://h:99999/0"}, ("status", "x"), "is not a valid Redis URL"),
        ({"STI_RESULT_BACKEND": "redis://[::1"}, ("status", "x"), "is not a valid Redis URL"),
        ({}, ("status", "x", "--broker", "http://h/0"), "is not a Redis URL"),
    ],
)
def test_sti_submit_refuses_a_broker_url_that_is_none(
    env: dict[str, str], args: tuple[str, ...], says: str
) -> None:
    done = _run(str(BIN / "sti-submit"), *args, **env)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "value"), [("STI_UPLOAD_EXPIRES", "abc"), ("STI_UPLOAD_MAX_BYTES", "0")]
)
def test_sti_submit_refuses_its_upload_settings_before_it_queues_anything(
    broker_url: str, tmp_path: Path, name: str, value: str
) -> None:
    (tmp_path / "index.html").write_text("<h1>hello</h1>\n")
    args = ("build", str(tmp_path), "builder", "app", "--no-wait", "--broker", broker_url)
    done = _run(str(BIN / "sti-submit"), *args, **{name: value})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"sti-submit: {name}={value!r} ")
    assert "Traceback" not in done.stderr
