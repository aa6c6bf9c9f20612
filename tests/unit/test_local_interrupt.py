"""--local runs the engine on a thread of its own, so that an interrupt (Ctrl-C, and SIGTERM or
SIGHUP made one) is handled at once even while the build blocks in a read: the build is then
stopped, cleans up, and the interrupt goes on."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from typing import Any, cast

import pytest

from sti.model import Result
from sti_worker.local import _interruptible

_DONE = cast(Result, "done")


def test_the_work_s_result_or_error_comes_back() -> None:
    assert _interruptible(lambda: _DONE, stop=lambda: None) == _DONE

    def failing() -> Result:
        raise ValueError("no such thing")

    with pytest.raises(ValueError, match="no such thing"):
        _interruptible(failing, stop=lambda: None)


def test_an_interrupt_during_a_blocking_read_stops_the_work_and_waits_for_its_cleanup() -> None:
    reader, writer = socket.socketpair()
    events: list[str] = []

    def work() -> Result:
        try:
            reader.recv(1)  # as a quiet prepare's output: nothing comes until stopped
        finally:
            events.append("cleaned up")
        return _DONE

    def stop() -> None:
        events.append("stopped")
        writer.send(b"x")

    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _interruptible(work, stop)
    finally:
        timer.cancel()
        reader.close()
        writer.close()
    assert events[0] == "stopped" and events[-1] == "cleaned up"


def test_work_that_starts_something_after_the_first_stop_is_stopped_again() -> None:
    stops: list[Any] = []

    def work() -> Result:
        # as a container created after the first kill: it runs on until stopped again (or,
        # were it never, until the test gives up on it)
        deadline = time.monotonic() + 5
        while len(stops) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        return _DONE

    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        _interruptible(work, stop=lambda: stops.append(1))
    assert len(stops) >= 3
