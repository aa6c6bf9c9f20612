"""What a delta upload is: the entries of a packed directory that changed since a whole upload of
it (its base), and the paths it no longer has, as the first member of the same packed tar.

Shared by the packer (sti_submit.upload) and the worker (sti_worker.engine.deltas), which reads
the removal list as hostile input: every path is checked here before it is compared with
anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .errors import InvalidInput
from .ignore import in_git_metadata

# the delta's first member, outside src/ (where the entries are): the removed paths, relative to
# src/, each followed by a NUL (a name may hold any other byte)
REMOVED_MEMBER = "removed"
MAX_REMOVED_BYTES = 16 * 1024 * 1024  # 100,000 paths of 160 bytes
_MAX_NAME_BYTES = 255
_MAX_PATH_BYTES = 4095
_MAX_DEPTH = 256


def encode_removed(paths: Iterable[str]) -> bytes:
    return b"".join(os.fsencode(path) + b"\0" for path in paths)


def decode_removed(data: bytes, max_paths: int) -> frozenset[str]:
    """The removal list of a delta, each path checked (see check_removed_path)."""
    if len(data) > MAX_REMOVED_BYTES:
        raise InvalidInput(f"the delta's removal list is larger than {MAX_REMOVED_BYTES} bytes")
    if data and not data.endswith(b"\0"):
        raise InvalidInput("the delta's removal list is malformed: its last path is not ended")
    names = data.split(b"\0")[:-1]
    if len(names) > max_paths:
        raise InvalidInput(f"the delta removes more than {max_paths} paths (STI_SOURCE_MAX_FILES)")
    # tarfile reads a PAX name as UTF-8, keeping other bytes as surrogates: the same spelling
    return frozenset(check_removed_path(name.decode("utf-8", "surrogateescape")) for name in names)


def check_removed_path(path: str) -> str:
    """A removed path as the packer writes it: relative to the source root, normalised (no
    empty, "." or ".." part), not the root, not git metadata (never in a source, so never
    removed from one), within the lengths an archive entry may have. Whether it names
    something of the base that is not below a link is for the reader of the base to say."""
    shown = repr(path[:200])
    if not path or path == ".":
        raise InvalidInput("the delta removes the source root itself")
    if path.startswith("/"):
        raise InvalidInput(f"the delta removes {shown}, an absolute path")
    parts = path.split("/")
    if ".." in parts:
        raise InvalidInput(f"the delta removes {shown}, which points outside the source root")
    if "" in parts or "." in parts:
        raise InvalidInput(f"the delta removes {shown}, which is not a normalised path")
    if in_git_metadata(path):
        raise InvalidInput(f"the delta removes {shown}, git metadata, which is never in a source")
    encoded = os.fsencode(path)
    too_long = any(len(os.fsencode(part)) > _MAX_NAME_BYTES for part in parts)
    if too_long or len(encoded) > _MAX_PATH_BYTES or len(parts) > _MAX_DEPTH:
        raise InvalidInput(f"the delta removes {shown}, a path longer than an entry's may be")
    return path


def ancestors(path: str) -> Iterable[str]:
    """The directories above path, nearest last ("a", "a/b" for "a/b/c")."""
    parts = path.split("/")
    return ("/".join(parts[:depth]) for depth in range(1, len(parts)))
