"""Helpers for tests that go through the queue: the sti-submit CLI as a user runs it."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from tests.services import BIN


def sti_submit(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "sti-submit"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def json_result(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert lines, f"no output; stderr: {completed.stderr}"
    return json.loads(lines[-1])


def make_source(root: Path) -> Path:
    source = root / "app"
    (source / "static").mkdir(parents=True)
    (source / "index.html").write_text("<h1>hello</h1>\n")
    (source / "static" / "style.css").write_text("h1 { color: red }\n")
    return source


def tar_gz_of(directory: Path) -> bytes:
    """The directory as a .tar.gz, for sources served over http."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(str(directory), arcname=".")
    return buffer.getvalue()
