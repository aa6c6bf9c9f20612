"""The build cache is trimmed on a thread of its own, one at a time per worker process."""

from __future__ import annotations

import threading

from sti_worker.engine.docker_host import DockerHost
from sti_worker.housekeeping import trim_in_background
from tests.unit.fake_docker import FakeDocker


class _SlowEngine(FakeDocker):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def trim_build_cache(self) -> str | None:
        self.release.wait(10)
        return super().trim_build_cache()


def test_a_trim_runs_off_the_callers_thread_and_one_at_a_time() -> None:
    engine = _SlowEngine()
    first = trim_in_background(engine.as_host)
    assert first is not None and first.is_alive()  # the caller did not wait for it
    assert trim_in_background(engine.as_host) is None  # one is running: no second
    engine.release.set()
    first.join(10)
    assert engine.calls == [("trim_build_cache", "")]
    again = trim_in_background(engine.as_host)
    assert again is not None
    again.join(10)
    assert engine.calls == [("trim_build_cache", "")] * 2


def test_a_failing_trim_ends_its_thread_quietly() -> None:
    def unreachable() -> DockerHost | None:
        raise ConnectionError("engine went away")

    thread = trim_in_background(unreachable)
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
