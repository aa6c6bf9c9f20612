"""Which files of a source directory are left out: .stiignore (gitignore syntax), --exclude
patterns, and git metadata. Shared by the uploader and the in-place (--local) reader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pathspec

IGNORE_FILE = ".stiignore"
_ALWAYS = (".git/",)


def ignore_matcher(root: Path, extra_patterns: Iterable[str] = ()) -> Callable[[str], bool]:
    """A predicate over paths relative to root (POSIX, directories ending in "/")."""
    patterns = list(_ALWAYS)
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file() and not ignore_file.is_symlink():
        patterns += ignore_file.read_text(errors="replace").splitlines()
    patterns += list(extra_patterns)
    spec = pathspec.GitIgnoreSpec.from_lines(patterns)
    return spec.match_file
