"""What sti-submit remembers of the last whole upload of a directory: its digest and, per entry,
what the packer wrote of it, so the next submission can send only what changed (sti.deltas).

One JSON file per directory and broker, under $XDG_CACHE_HOME/sti/uploads (else
~/.cache/sti/uploads), named by a hash of both (the broker URL may hold a password: it is never
written), replaced atomically. A file that cannot be read or does not parse is no record: the
directory is uploaded whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_FORMAT = "sti-manifest/1"
_MAX_BYTES = 256 * 1024 * 1024

# an entry as the packer writes it: kind ("d", "f" or "l"), mode, size, modification time in
# nanoseconds (a change within the second packs the same mtime but other bytes), link target
Identity = tuple[str, int, int, int, str]


def identity(info: os.stat_result, link: str) -> Identity:
    """What decides whether an entry is packed again: a directory's mode (its time is not
    packed), a link's mode and target, a file's mode, size and time."""
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        return ("d", mode, 0, 0, "")
    if stat.S_ISLNK(mode):
        return ("l", mode, 0, 0, link)
    return ("f", mode, info.st_size, info.st_mtime_ns, "")


@dataclass(frozen=True)
class Manifest:
    digest: str  # of the whole upload
    entries: dict[str, Identity]  # by path relative to the directory, as packed into it
    # the last submission's fingerprint (sti_submit.upload) and the delta it sent, to send
    # nothing when the directory is submitted again unchanged
    last: tuple[str, str] = ("", "")
    file_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        total = sum(entry[2] for entry in self.entries.values())
        object.__setattr__(self, "file_bytes", total)


def cache_root() -> Path:
    """Where records go: $XDG_CACHE_HOME (an absolute path, as the spec asks), else ~/.cache."""
    configured = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(configured) if os.path.isabs(configured) else Path.home() / ".cache"
    return base / "sti" / "uploads"


class ManifestCache:
    """The record of one directory as submitted to one broker."""

    def __init__(self, directory: Path, broker_url: str, root: Path | None = None) -> None:
        key = json.dumps([str(directory.absolute()), broker_url])
        self.path = (root or cache_root()) / f"{hashlib.sha256(key.encode()).hexdigest()}.json"
        self._directory = str(directory.absolute())

    def load(self) -> Manifest | None:
        try:
            if self.path.stat().st_size > _MAX_BYTES:
                return None
            found = json.loads(self.path.read_text())
            return _parsed(found, self._directory)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def save(self, manifest: Manifest) -> None:
        """Write it whole or not at all (a temp file in the same directory, renamed over it);
        a cache that cannot be written only costs the next submission a whole upload."""
        record = {
            "format": _FORMAT,
            "directory": self._directory,
            "base": manifest.digest,
            "last": list(manifest.last),
            "entries": manifest.entries,
        }
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
        except OSError:
            return
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(record, out, separators=(",", ":"))
            os.replace(name, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(name)

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _parsed(found: Any, directory: str) -> Manifest | None:
    if found.get("format") != _FORMAT or found.get("directory") != directory:
        return None
    entries = {
        str(path): (str(kind), int(mode), int(size), int(mtime), str(link))
        for path, (kind, mode, size, mtime, link) in found["entries"].items()
    }
    fingerprint, ref = found.get("last") or ("", "")
    return Manifest(str(found["base"]), entries, (str(fingerprint), str(ref)))
