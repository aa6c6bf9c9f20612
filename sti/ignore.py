"""Which files of a source directory are left out: .stiignore and s2i's .s2iignore (both in
gitignore syntax), --exclude patterns, and git metadata. Shared by the uploader and the
in-place (--local) reader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import InvalidInput

IGNORE_FILE = ".stiignore"
IGNORE_FILES = (IGNORE_FILE, ".s2iignore")
_ALWAYS = (".git/",)
_MAX_IGNORE_FILE_BYTES = 1024 * 1024


def ignore_matcher(root: Path, extra_patterns: Iterable[str] = ()) -> Callable[[str], bool]:
    """A predicate over paths relative to root (POSIX, directories ending in "/"), for a walk
    that does not enter a directory it leaves out."""
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
        compiled = compile_patterns([*_ALWAYS, *patterns])
    except PatternError as error:
        raise InvalidInput(f"{' or '.join(IGNORE_FILES)} or --exclude: {error}") from error
    if len(compiled) == len(_ALWAYS):
        return in_git_metadata
    return lambda path: is_ignored(compiled, path)


def in_git_metadata(path: str) -> bool:
    """What the pattern ".git/" matches: a directory named .git anywhere, and all inside it."""
    return path.startswith(".git/") or "/.git/" in path
