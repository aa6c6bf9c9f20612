"""What sti found out about an image, kept on disk between runs of `sti-submit --local`.

A worker finds a builder's scripts once and remembers them for its lifetime; a --local run is a
new process each time and would look again (a created container and a stat per script, about
40 ms of a tiny build). What it finds depends only on the image's content, which its id hashes,
so an answer stored under the image id stays true. Best effort: a file that cannot be read,
written or parsed is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_KEPT = 256


def default_directory() -> Path:
    """$XDG_CACHE_HOME/sti/image-facts, else ~/.cache/sti/image-facts."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sti" / "image-facts"


class FactCache:
    """JSON answers on disk, one file per question (named by its hash), at most kept files."""

    def __init__(self, directory: Path, kept: int = DEFAULT_KEPT) -> None:
        self.directory = directory
        self.kept = kept

    def get(self, key: str) -> Any | None:
        try:
            stored = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(stored, dict) or stored.get("key") != key:
            return None  # a hash collision or a file someone else wrote
        return stored.get("value")

    def put(self, key: str, value: Any) -> None:
        text = json.dumps({"key": key, "value": value}, sort_keys=True)
        written = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            # written aside and renamed, so that a run reading at the same time sees all or none
            with tempfile.NamedTemporaryFile(
                "w", dir=self.directory, prefix=".", suffix=".tmp", delete=False, encoding="utf-8"
            ) as file:
                written = Path(file.name)
                file.write(text)
            os.replace(written, self._path(key))
            self._trim()
        except OSError:
            if written is not None:
                written.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.directory / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def _trim(self) -> None:
        """Remove the oldest answers beyond the kept number."""
        answers = []
        for path in self.directory.glob("*.json"):
            try:
                answers.append((path.stat().st_mtime, path))
            except OSError:
                continue
        answers.sort(reverse=True)
        for _, path in answers[self.kept :]:
            path.unlink(missing_ok=True)
