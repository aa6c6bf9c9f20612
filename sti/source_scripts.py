"""The s2i scripts a source brings in its .s2i/bin (assemble, run, save-artifacts, and
assemble-runtime for a --runtime-image), as s2i takes them over the images' own. Only their
names are found here: the files go into the build inside the source itself and are copied from
there to <destination>/scripts.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import InvalidInput

S2I_SCRIPT_NAMES = ("assemble", "run", "save-artifacts", "assemble-runtime")
SOURCE_SCRIPTS_DIR = ".s2i/bin"


def check_script_names(names: Iterable[str]) -> tuple[str, ...]:
    found = tuple(names)
    for name in found:
        if name not in S2I_SCRIPT_NAMES:
            raise InvalidInput(
                f"source script {name!r} is not one of: {', '.join(S2I_SCRIPT_NAMES)}"
            )
    if len(set(found)) != len(found):
        raise InvalidInput(f"source scripts {list(found)} name one twice")
    return found


def source_scripts(root: Path, skip: Callable[[str], bool] | None = None) -> tuple[str, ...]:
    """Which of S2I_SCRIPT_NAMES the source at root has in .s2i/bin: executable regular files;
    a link there (.s2i, .s2i/bin or a script) is refused. skip: the source's ignore rules (a
    path relative to root; directories end in "/"): what they leave out is not in the build."""
    skipped = skip or (lambda path: False)
    directory = root
    for part in (".s2i", "bin"):
        directory = directory / part
        try:
            mode = directory.lstat().st_mode
        except FileNotFoundError:
            return ()
        relative = directory.relative_to(root).as_posix()
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"{relative} in the source is a symbolic link")
        if not stat.S_ISDIR(mode) or skipped(f"{relative}/"):
            return ()
    found = []
    for name in S2I_SCRIPT_NAMES:
        relative = f"{SOURCE_SCRIPTS_DIR}/{name}"
        try:
            mode = (root / relative).lstat().st_mode
        except FileNotFoundError:
            continue
        if skipped(relative):
            continue
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"{relative} in the source is a symbolic link")
        if not stat.S_ISREG(mode):
            raise InvalidInput(f"{relative} in the source is not a regular file")
        if not mode & stat.S_IXUSR:
            raise InvalidInput(f"{relative} in the source is not executable")
        found.append(name)
    return tuple(found)
