"""After a build's result, a worker process removes the source images beyond its limit and
trims the build cache on a thread of its own; what is asked for while it runs, it does next."""

from __future__ import annotations

import threading

import pytest

from sti.model import SOURCE_REPOSITORY
from sti_worker.engine.docker_host import DockerHost
from sti_worker.housekeeping import tidy_in_background
from tests.unit.fake_docker import FakeDocker


class _SlowEngine(FakeDocker):
    def __init__(self) -> None:
        super().__init__(source_images_keep=2)
        self.release = threading.Event()

    def trim_build_cache(self) -> str | None:
        self.release.wait(10)
        return super().trim_build_cache()


def _source_image(engine: FakeDocker, name: str) -> None:
    engine.add_image(f"sha256:{name}", None, f"{SOURCE_REPOSITORY}:{name}")


def test_housekeeping_runs_on_its_own_thread_then_does_what_was_asked_meanwhile() -> None:
    engine = _SlowEngine()
    for name in ("oldest", "older", "newest"):
        _source_image(engine, name)
    first = tidy_in_background(engine.as_host, trim_cache=True)
    assert first is not None and first.is_alive()  # the caller did not wait for it
    _source_image(engine, "newer-still")
    # one is running (held in its trim): no second thread, the running one does it next
    assert tidy_in_background(engine.as_host, trim_cache=False) is None
    engine.release.set()
    first.join(10)
    assert not first.is_alive()
    chores = [call for call in engine.calls if call[0] in ("remove_reference", "trim_build_cache")]
    assert chores == [
        ("remove_reference", f"{SOURCE_REPOSITORY}:oldest"),
        ("trim_build_cache", ""),
        ("remove_reference", f"{SOURCE_REPOSITORY}:older"),
    ]
    assert sorted(engine.references) == [
        f"{SOURCE_REPOSITORY}:newer-still",
        f"{SOURCE_REPOSITORY}:newest",
    ]
    again = tidy_in_background(engine.as_host, trim_cache=False)
    assert again is not None  # the first one ended: a new one
    again.join(10)


def test_a_failing_chore_is_logged_and_the_others_still_run() -> None:
    engine = FakeDocker(source_images_keep=0)
    _source_image(engine, "only")
    attempts = []

    def unreachable_once() -> DockerHost | None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("engine went away")
        return engine.as_host()

    thread = tidy_in_background(unreachable_once, trim_cache=True)
    assert thread is not None
    thread.join(10)
    assert not thread.is_alive()
    assert len(attempts) == 2  # the source images' chore failed, the trim ran
    assert engine.calls == [("trim_build_cache", "")]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # expected
def test_a_thread_ended_by_more_than_an_error_leaves_the_next_result_a_new_one() -> None:
    class _Exiting(FakeDocker):
        def references_in(self, repository: str) -> list[str]:
            raise SystemExit("the process is going")  # not an Exception: the thread ends

    thread = tidy_in_background(_Exiting().as_host, trim_cache=False)
    assert thread is not None
    thread.join(10)
    engine = FakeDocker(source_images_keep=0)
    _source_image(engine, "only")
    again = tidy_in_background(engine.as_host, trim_cache=False)
    assert again is not None  # not taken for still running
    again.join(10)
    assert engine.references == {}


def test_a_broker_that_fails_after_the_result_fails_no_finished_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The result is stored: a task that raised now would be taken for a broken chain."""
    from sti_worker import tasks

    def unreachable() -> None:
        raise ConnectionError("the broker went away")

    monkeypatch.setattr(tasks, "redis_client", unreachable)
    tasks._tidy_after_the_result()  # logged, not raised
