"""Which files of a source directory are left out: .stiignore (gitignore syntax), --exclude
patterns, and git metadata. Shared by the uploader and the in-place (--local) reader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

IGNORE_FILE = ".stiignore"
_ALWAYS = (".git/",)


def ignore_matcher(root: Path, extra_patterns: Iterable[str] = ()) -> Callable[[str], bool]:
    """A predicate over paths relative to root (POSIX, directories ending in "/")."""
    patterns = []
    ignore_file = root / IGNORE_FILE
    if ignore_file.is_file() and not ignore_file.is_symlink():
        patterns += ignore_file.read_text(errors="replace").splitlines()
    patterns += list(extra_patterns)
    if not any(line.strip() and not line.startswith("#") for line in patterns):
        return in_git_metadata  # pathspec's import is a tenth of a submit: only when needed
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines([*_ALWAYS, *patterns]).match_file


def in_git_metadata(path: str) -> bool:
    """What the pattern ".git/" matches: a directory named .git anywhere, and all inside it."""
    return path.startswith(".git/") or "/.git/" in path
