"""Which archive a file name or URL path names, by its suffix (both sides need it: the client
uploads an archive as it is, the worker picks its extractor)."""

from __future__ import annotations

import re

_SUFFIXES = (
    (".tar.gz", "tar.gz"),
    (".tgz", "tar.gz"),
    (".tar.bz2", "tar.bz2"),
    (".tbz2", "tar.bz2"),
    (".tbz", "tar.bz2"),
    (".tar.xz", "tar.xz"),
    (".txz", "tar.xz"),
    (".tar", "tar"),
    (".zip", "zip"),
)


def archive_kind(name: str) -> str | None:
    """'tar', 'tar.gz', 'tar.bz2', 'tar.xz' or 'zip' from a file name or URL path (.tgz = tar.gz,
    .tbz2/.tbz = tar.bz2, .txz = tar.xz; case-insensitive; ignore ?query and #fragment), else None.
    """
    path = re.split(r"[?#]", name, maxsplit=1)[0].lower()
    return next((kind for suffix, kind in _SUFFIXES if path.endswith(suffix)), None)
