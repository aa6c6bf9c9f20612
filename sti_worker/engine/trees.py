"""A build's work dir whatever a source put in it: measured and removed without recursion
(Python's rmtree recurses once per directory level, and a git source can hold paths thousands
of levels deep), without following links, and through directories a source made read-only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sti.ignore import is_git_metadata


def remove_tree(root: Path) -> None:
    """Remove root and everything in it; what cannot be removed is left, never raised."""
    stack, given_up = [str(root)], set()
    while stack:
        current = stack[-1]
        with contextlib.suppress(OSError):
            os.chmod(current, 0o700, follow_symlinks=False)
        try:
            entries = list(os.scandir(current))
        except NotADirectoryError:
            _unlink(current)
            stack.pop()
            continue
        except OSError:
            given_up.add(current)
            stack.pop()
            continue
        below = []
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                _unlink(entry.path)
            elif entry.path not in given_up:
                below.append(entry.path)
        if below:
            stack.extend(below)
            continue
        try:
            os.rmdir(current)
        except FileNotFoundError:
            pass
        except OSError:
            given_up.add(current)
        stack.pop()


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def measure_tree(root: Path, *, stop_after_files: int) -> tuple[int, int]:
    """(entries, bytes of regular files) below root, not counting git metadata (a checkout's
    .git, a submodule's .git file: never part of a build); counting stops once entries pass
    stop_after_files."""
    stack, entries, size = [str(root)], 0, 0
    while stack and entries <= stop_after_files:
        current = stack.pop()
        try:
            found = list(os.scandir(current))
        except OSError:
            continue  # gone or unreadable: nothing of it goes into the build either
        for entry in found:
            if is_git_metadata(entry.name):
                continue
            entries += 1
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                size += entry.stat(follow_symlinks=False).st_size
    return entries, size
