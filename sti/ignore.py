"""Which files of a source directory are left out: git metadata always, whatever the patterns,
then .stiignore and s2i's .s2iignore (both in gitignore syntax) and --exclude patterns. Shared by
the uploader, its fingerprint, the in-place (--local) reader and the worker's directory sources."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import InvalidInput

IGNORE_FILE = ".stiignore"
IGNORE_FILES = (IGNORE_FILE, ".s2iignore")
GIT_METADATA = ".git"
_MAX_IGNORE_FILE_BYTES = 1024 * 1024


def ignore_matcher(root: Path, extra_patterns: Iterable[str] = ()) -> Callable[[str], bool]:
    """A predicate over paths relative to root (POSIX, directories ending in "/"), for a walk
    that does not enter a directory it leaves out. Git metadata is left out before any pattern
    is read: a negation (`!.git*` to keep .gitignore, `!.*`, `!**`) cannot bring it back."""
    # spelled, or reached through a link (--local reads the resolved directory)
    found = [part for part in (root.name, *root.resolve().parts) if is_git_metadata(part)]
    if found:
        raise InvalidInput(f"{str(root)!r} is git metadata ({found[0]}), never a source to build")
    patterns = []
    for name in IGNORE_FILES:
        ignore_file = root / name
        if ignore_file.is_file() and not ignore_file.is_symlink():
            if ignore_file.stat().st_size > _MAX_IGNORE_FILE_BYTES:
                raise InvalidInput(f"{name} is larger than {_MAX_IGNORE_FILE_BYTES} bytes")
            patterns += ignore_file.read_text(errors="replace").splitlines()
    patterns += list(extra_patterns)
    if not patterns:
        return in_git_metadata
    # the pattern engine is imported only for a source that has patterns: a few ms of every
    # submission of one that has none
    from .globs import PatternError, compile_patterns, is_ignored

    try:
        compiled = compile_patterns(patterns)
    except PatternError as error:
        raise InvalidInput(f"{' or '.join(IGNORE_FILES)} or --exclude: {error}") from error
    if not compiled:
        return in_git_metadata
    return lambda path: in_git_metadata(path) or is_ignored(compiled, path)


def is_git_metadata(name: str) -> bool:
    """Whether a file or directory of this name is git metadata: .git, in any case (git refuses
    such a path in a tree in any case, and on a case-insensitive disk .GIT is the repository)."""
    return name.lower() == GIT_METADATA


def in_git_metadata(path: str) -> bool:
    """Whether path (relative, POSIX, a directory's with or without a trailing "/") is git
    metadata or inside it: a .git directory at any depth (a nested repository), or a .git file
    (the pointer of a worktree or a submodule), in any case."""
    lowered = path.lower()
    if GIT_METADATA not in lowered:
        return False
    return any(is_git_metadata(part) for part in lowered.split("/"))
