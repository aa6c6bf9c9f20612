"""Turning SOURCE into a directory on this host and then into a tar stream under src/.

Local directories are read in place; git URLs are cloned (shallow where the ref allows) into
the build's own work directory with GitPython.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from .errors import InvalidInput, SourceFetchFailed
from .tarstreams import TarPart, directory

LogSink = Callable[[str], None]

_GIT_SCHEMES = ("git://", "https://", "http://", "ssh://", "file://")
_SCP_LIKE = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9.-]+:(?!//)[^\s]+$")
_COMMIT = re.compile(r"^[0-9a-f]{7,40}$")


@dataclass(frozen=True)
class FetchedSource:
    path: str
    revision: str | None = None


def is_git_url(source: str) -> bool:
    return source.startswith(_GIT_SCHEMES) or bool(_SCP_LIKE.match(source))


def fetch_source(
    source: str,
    workdir: Path,
    sink: LogSink,
    *,
    ref: str | None = None,
    context_dir: str | None = None,
    ignore_submodules: bool = False,
) -> FetchedSource:
    """A directory holding the source to build, inside workdir unless it is read in place."""
    if is_git_url(source):
        fetched = _clone(source, workdir / "git", sink, ref, ignore_submodules)
    else:
        if ref:
            raise InvalidInput(f"--ref {ref!r} only applies to git sources, not {source!r}")
        fetched = FetchedSource(str(_local_directory(source)))
    if context_dir:
        return FetchedSource(str(_subdirectory(Path(fetched.path), context_dir)), fetched.revision)
    return fetched


def source_part(fetched: FetchedSource) -> TarPart:
    """The source as tar members under src/, without git metadata."""
    return directory(Path(fetched.path), "src", skip=lambda relative: relative == ".git/")


def _local_directory(source: str) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInput(f"SOURCE {source!r} is neither an existing directory nor a git URL")
    if not path.is_dir():
        raise InvalidInput(f"SOURCE {source!r} is not a directory")
    return path.resolve()


def _subdirectory(root: Path, context_dir: str) -> Path:
    if context_dir.startswith("/") or ".." in Path(context_dir).parts:
        raise InvalidInput(f"--context-dir {context_dir!r} must be a relative path in the source")
    target = (root / context_dir).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidInput(f"--context-dir {context_dir!r} leads outside the source")
    if not target.is_dir():
        raise InvalidInput(f"--context-dir {context_dir!r} is not a directory in the source")
    return target


def _clone(
    url: str, destination: Path, sink: LogSink, ref: str | None, ignore_submodules: bool
) -> FetchedSource:
    for value, what in ((url, "git URL"), (ref or "", "--ref")):
        if value.startswith("-") or "::" in value.split("/")[0]:
            raise InvalidInput(f"{what} {value!r} is refused: it could be read as a git option")
    options = [] if ignore_submodules else ["--recurse-submodules", "--shallow-submodules"]
    by_commit = bool(ref and _COMMIT.match(ref))
    sink(f"Cloning {url}" + (f" at {ref}" if ref else ""))
    try:
        if by_commit:
            repo = git.Repo.clone_from(url, destination, multi_options=options, no_checkout=True)
            repo.git.checkout(ref, "--")
            if not ignore_submodules:
                repo.git.submodule("update", "--init", "--recursive")
        else:
            extra = {"branch": ref} if ref else {}
            repo = git.Repo.clone_from(url, destination, depth=1, multi_options=options, **extra)
    except git.GitCommandError as error:
        stderr = (error.stderr or "").strip().replace("\n", " ")
        raise SourceFetchFailed(f"cloning {url} failed: {stderr or error}") from error
    except git.UnsafeProtocolError as error:
        raise InvalidInput(f"git URL {url!r} uses a transport sti does not allow") from error
    revision = repo.head.commit.hexsha
    repo.close()
    sink(f"Source at commit {revision}")
    return FetchedSource(str(destination), revision)
