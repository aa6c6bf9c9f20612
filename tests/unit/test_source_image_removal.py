"""The copy's container (and older source images) are removed while the build goes on; the
build step waits for them."""

from __future__ import annotations

import threading
from concurrent.futures import Future

import pytest

from sti.errors import BuildFailed, DockerConnectionFailed
from sti_worker.engine.source_images import SourceImage


def test_the_wait_ends_when_the_removal_does() -> None:
    removal: Future[None] = Future()
    timer = threading.Timer(0.2, removal.set_result, [None])
    timer.start()
    done: Future[None] = Future()
    done.set_result(None)
    with SourceImage("sha256:copy", (done, removal)).settling():
        pass
    assert removal.done()


def test_a_failed_removal_fails_the_build_unless_it_is_failing_already() -> None:
    removal: Future[None] = Future()
    removal.set_exception(DockerConnectionFailed("the engine went away"))
    made = SourceImage("sha256:copy", (removal,))
    with pytest.raises(DockerConnectionFailed), made.settling():
        pass
    # the build's own error is the one it reports
    with pytest.raises(BuildFailed), made.settling():
        raise BuildFailed("prepare exited with code 3")


def test_a_copy_found_has_nothing_to_wait_for() -> None:
    with SourceImage("sha256:found").settling():
        pass
