"""STI_TRACE_ENGINE_CALLS: every Engine API call a host makes is logged with its milliseconds,
its path without the query; off, nothing is."""

from __future__ import annotations

from structlog.testing import capture_logs

from sti_worker.engine.docker_host import DockerHost


def test_a_traced_host_logs_each_call_with_its_milliseconds() -> None:
    with capture_logs() as logs:
        host = DockerHost(trace_calls=True)
        try:
            host.api.containers(filters={"name": "^/no-such-container-of-sti$"})
        finally:
            host.close()
    calls = [log for log in logs if log["event"] == "engine call"]
    (listed,) = [call for call in calls if call["path"].endswith("/containers/json")]
    assert listed["method"] == "GET" and listed["status"] == 200
    assert isinstance(listed["ms"], float) and listed["ms"] >= 0
    assert "?" not in listed["path"] and "no-such-container" not in listed["path"]


def test_an_untraced_host_logs_no_call() -> None:
    with capture_logs() as logs:
        host = DockerHost()
        try:
            host.api.containers(filters={"name": "^/no-such-container-of-sti$"})
        finally:
            host.close()
    assert not [log for log in logs if log["event"] == "engine call"]
