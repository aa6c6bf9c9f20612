"""Untrusted tar and zip archives, extracted streaming and only inside a fresh directory.

Entries that could land or link outside it, write through a link or fill the disk are refused.
"""

from __future__ import annotations

import bz2
import contextlib
import itertools
import lzma
import os
import re
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Protocol

import zstandard

from sti.errors import InvalidInput, StiError
from sti.ignore import in_git_metadata
from sti.tarstreams import empty_directory

from . import zip_directory
from .inflate import BackgroundGunzip, BackgroundUnzstd

Read = Callable[[int], bytes]
EntryKind = Literal["directory", "file", "link", "hard link"]

_CHUNK = 1024 * 1024
_MAX_TRAILER_CHUNKS = 16
_MAX_NAME_BYTES = 255
_MAX_PATH_BYTES = 4095
MAX_DEPTH = 256  # real sources nest a few dozen deep; each level costs every deeper entry
_MAX_LINK_TARGET_BYTES = 4095
_MAX_EXTENDED_HEADER_BYTES = 1024 * 1024
_MAX_EXTENDED_HEADERS_IN_A_ROW = 8
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DRIVE = re.compile(r"^[A-Za-z]:")
# PAX numbers as POSIX spells them; tarfile's int() and float() would also take "nan", "1e999",
# "1_0" and other digits than ASCII's, and read what they refuse as 0
_PAX_INTEGER = re.compile(r"[0-9]{1,19}", re.ASCII)
_PAX_TIME = re.compile(r"-?[0-9]{1,19}(?:\.[0-9]{1,19})?", re.ASCII)
_PAX_INTEGER_FIELDS = ("size", "uid", "gid")
_PAX_TIME_FIELDS = ("mtime", "atime", "ctime")
_MAX_PAX_INTEGER = 2**63 - 1
MAX_TIME_S = _MAX_PAX_INTEGER // 10**9  # what 64-bit nanoseconds hold (Docker's, Go's)
_UNIX = 3  # ZipInfo.create_system of archives whose external_attr holds a Unix mode

_EXTENDED_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
_SPECIAL_TAR_TYPES = {
    tarfile.CHRTYPE: "device",
    tarfile.BLKTYPE: "device",
    tarfile.FIFOTYPE: "fifo",
}
_SPECIAL_FILE_TYPES = {
    stat.S_IFCHR: "device",
    stat.S_IFBLK: "device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
# What decompressors, tarfile and zipfile raise on bad data; the source's own errors are told
# apart by _WatchedStream, ours are StiErrors.
_DECODE_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    zstandard.ZstdError,
    lzma.LZMAError,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,
)


@dataclass(frozen=True)
class ExtractLimits:
    """How much one archive may put on disk."""

    max_total_bytes: int = 2 * 1024**3  # regular files after extraction, and tar extended headers
    max_files: int = 100_000  # entries of any kind
    max_file_bytes: int | None = None  # optional per-file cap (None = only the total)


def extract_tar_stream(
    stream: BinaryIO,
    destination: Path,
    kind: str,
    limits: ExtractLimits,
    *,
    links_anywhere: bool = False,
) -> int:
    """Extract a tar (kind 'tar', 'tar.gz', 'tar.bz2', 'tar.xz', or 'tar.zst' for a packed
    upload) read sequentially from stream
    (a non-seekable pipe or HTTP body will do); return the number of entries. destination exists
    and is empty. links_anywhere keeps symlinks whatever their target (a directory sti-submit
    packed keeps its links as links); nothing is ever written through a link either way.

    gzip, bz2 and lzma decompress (they notice truncation and check checksums, which tarfile's own
    'r|gz' does not) and tarfile reads the result in stream mode 'r|'.
    """
    extraction = _Extraction(destination, limits, links_anywhere=links_anywhere)
    _read_tar_stream(stream, kind, extraction)
    return extraction.entries


def retar_tar_stream(
    stream: BinaryIO,
    kind: str,
    limits: ExtractLimits,
    out: tarfile.TarFile,
    *,
    root: str = "",
    context_dir: str | None = None,
    prefix: str = "src",
    links_anywhere: bool = False,
    keep_git_metadata: bool = False,
) -> int:
    """Copy a tar read sequentially from stream into out, through the same checks as
    extract_tar_stream but with nothing written to disk. root is the archive's directory that
    holds the source ("" for the archive's own root); the entries below root/context_dir go into
    out under prefix, but git metadata (never part of a source) unless keep_git_metadata (what
    is not a source: saved artifacts). Returns the number of entries read."""
    retar = _Retar(
        out,
        limits,
        root=root,
        context_dir=context_dir,
        prefix=prefix,
        links_anywhere=links_anywhere,
        keep_git_metadata=keep_git_metadata,
    )
    _read_tar_stream(stream, kind, retar)
    retar.finish()
    return retar.entries


class _Destination(Protocol):
    def count_entry(self) -> None: ...

    def count_header_bytes(self, name: str, size: int) -> None: ...

    def add(self, entry: _Entry, content: Read) -> None: ...


def _read_tar_stream(stream: BinaryIO, kind: str, destination: _Destination) -> None:
    if kind not in _TAR_KINDS:
        raise ValueError(f"{kind!r} is not a kind of tar archive")
    source = _WatchedStream(stream)
    guard = _DecodeGuard(kind, source)
    with contextlib.ExitStack() as opened:
        with guard:
            data = opened.enter_context(_decompressed(source, kind))
            tar = opened.enter_context(
                _CheckedTarFile.open(fileobj=data, mode="r|", bufsize=_TAR_READ_BYTES)
            )
        while (member := _next_member(tar, guard)) is not None:
            destination.count_entry()
            _extract_tar_member(destination, tar, member, guard)
            tar.members.clear()  # tarfile remembers every member it has read
        if data is not source:
            _read_to_end(data, guard)


def extract_zip(path: Path, destination: Path, limits: ExtractLimits) -> int:
    """Extract a zip file (needs a seekable file) the same way."""
    guard = _DecodeGuard("zip")
    extraction = _Extraction(destination, limits)
    if zip_directory.count_entries(path, stop_after=limits.max_files) > limits.max_files:
        raise _too_many_files(limits)  # before zipfile builds an object per entry
    with guard:
        archive = zipfile.ZipFile(path)
    with archive:
        infos = archive.infolist()
        extraction.check_declared(len(infos), sum(i.file_size for i in infos if not i.is_dir()))
        for info in infos:
            extraction.count_entry()
            _extract_zip_member(extraction, archive, info, guard)
    return extraction.entries


@dataclass(frozen=True)
class _Entry:
    name: str  # as the archive spells it, for messages
    path: str  # normalised, relative to the root, "" for the root itself
    kind: EntryKind
    mode: int
    mtime: float | None = None
    size: int = 0
    link_target: str = ""


class _EntryCount:
    """Entries read and directories they imply, against STI_SOURCE_MAX_FILES, and the bytes
    they decompress to, against STI_SOURCE_MAX_BYTES."""

    def __init__(self, limits: ExtractLimits) -> None:
        self._limits = limits
        self.entries = 0
        self._implied_directories = 0
        self._total_bytes = 0

    def count_entry(self) -> None:
        self.entries += 1
        self._check_file_count()

    def count_header_bytes(self, name: str, size: int) -> None:
        """An entry's extended headers (PAX records, GNU long names: up to a MiB each, eight
        in a row) decompress as its content does, and count with it."""
        self._total_bytes += size
        if self._total_bytes > self._limits.max_total_bytes:
            raise InvalidInput(
                f"archive entry {name!r} takes the archive over {self._limits.max_total_bytes} "
                "bytes of content and headers (STI_SOURCE_MAX_BYTES)"
            )

    def _count_implied(self, directories: int) -> None:
        self._implied_directories += directories
        self._check_file_count()

    def _check_file_count(self) -> None:
        if self.entries + self._implied_directories > self._limits.max_files:
            raise _too_many_files(self._limits)


class _Extraction(_EntryCount):
    """The destination of one archive, with what has been put there so far: a model of the
    tree it made (the destination started empty, and only this extraction writes there), so an
    entry costs the look-ups of the directories it adds, not of every one above it. What is
    made is made exclusively (O_EXCL, mkdir, symlink, link): a name the disk already has (a case
    or normalisation variant on a Mac's disk, with --local) is refused, never written through."""

    def __init__(
        self, destination: Path, limits: ExtractLimits, *, links_anywhere: bool = False
    ) -> None:
        super().__init__(limits)
        self._root = os.path.realpath(destination)
        self._links_anywhere = links_anywhere
        self._tree = _TreeModel()

    def check_declared(self, entries: int, total_bytes: int) -> None:
        """Refuse up front what the archive's own index shows to be too big."""
        if entries > self._limits.max_files:
            raise _too_many_files(self._limits)
        if total_bytes > self._limits.max_total_bytes:
            raise InvalidInput(
                f"the archive would extract to {total_bytes} bytes, more than "
                f"{self._limits.max_total_bytes} (STI_SOURCE_MAX_BYTES)"
            )

    def add(self, entry: _Entry, content: Read) -> None:
        if entry.kind == "directory":
            self._add_directory(entry)
        elif entry.kind == "link":
            self._add_link(entry)
        elif entry.kind == "hard link":
            self._add_hard_link(entry)
        else:
            self._add_file(entry, content)

    def _add_directory(self, entry: _Entry) -> None:
        if not entry.path:
            return  # the archive's own root, often listed as "./"
        parent, name, path = self._target(entry)
        if self._tree.kind_below(parent, name) != "directory":
            self._make(entry, parent, name, lambda: os.mkdir(path, 0o700))
        os.chmod(path, (entry.mode & 0o755) | stat.S_IRWXU)

    def _add_file(self, entry: _Entry, content: Read) -> None:
        self._check_sizes(entry.name, entry.size, self._total_bytes + entry.size)
        parent, name, path = self._target(entry)
        descriptor = self._make(entry, parent, name, lambda: os.open(path, _NEW_FILE_FLAGS, 0o600))
        with open(descriptor, "wb") as out:
            self._copy(entry.name, content, out)
            out.flush()
            os.fchmod(descriptor, entry.mode & 0o755)
            if entry.mtime is not None:
                with contextlib.suppress(OverflowError, ValueError):
                    os.utime(descriptor, (entry.mtime, entry.mtime))

    def _add_link(self, entry: _Entry) -> None:
        if self._links_anywhere:
            _check_link_is_valid(entry)
        else:
            _check_link_target(entry)
        parent, name, path = self._target(entry)
        self._make(entry, parent, name, lambda: os.symlink(entry.link_target, path))

    def _add_hard_link(self, entry: _Entry) -> None:
        _check_not_linked_into_git_metadata(entry)  # its file is never part of a source
        target, size = self._hard_link_target(entry)
        # a tree on disk goes into a build with each name of a file as a file of its own
        self._total_bytes += size
        self._check_sizes(entry.name, size, self._total_bytes)
        parent, name, path = self._target(entry)
        self._make(entry, parent, name, lambda: os.link(target, path, follow_symlinks=False))

    def _hard_link_target(self, entry: _Entry) -> tuple[str, int]:
        """The regular file an earlier entry put where the hard link's target names it, reached
        through directories only, and its size."""
        target = _hard_link_path(entry)
        kind = self._tree.kind(target)
        if kind != "file":
            what = {"directory": "a directory", "link": "a link"}
            raise _bad_hard_link(entry, what.get(kind or "", "not a file of the archive before it"))
        path = os.path.join(self._root, target)
        return path, os.lstat(path).st_size

    def _target(self, entry: _Entry) -> tuple[int, str, str]:
        """The node of the entry's directory (made where missing, never reached through a
        link), its name there and its path on disk; refused if an entry took the name."""
        if not entry.path:
            raise InvalidInput(f"archive entry {entry.name!r} names the source root itself")
        path = os.path.join(self._root, entry.path)
        if len(os.fsencode(path)) > _MAX_PATH_BYTES:
            raise InvalidInput(f"archive entry {entry.name!r} has too long a path")
        directory, _, name = entry.path.rpartition("/")
        parent, implied = self._tree.directory_of(entry)
        self._count_implied(implied)
        if implied:  # the last ones of the path, new in the model: made on disk too
            parts = directory.split("/")
            for depth in range(len(parts) - implied, len(parts)):
                made = os.path.join(self._root, *parts[: depth + 1])
                try:
                    os.mkdir(made, 0o755)
                except FileExistsError:
                    raise _appears_twice(entry.name) from None
        self._tree.check_free(parent, name, entry)
        return parent, name, path

    def _make(self, entry: _Entry, parent: int, name: str, make: Callable[[], Any]) -> Any:
        """make() the entry on disk, exclusively, and put it in the model."""
        try:
            made = make()
        except FileExistsError:
            raise _appears_twice(entry.name) from None
        self._tree.put(parent, name, "file" if entry.kind == "hard link" else entry.kind)
        return made

    def _copy(self, name: str, content: Read, out: BinaryIO) -> None:
        # counts what really comes out, whatever the header claimed
        written = 0
        while chunk := content(_CHUNK):
            written += len(chunk)
            self._total_bytes += len(chunk)
            self._check_sizes(name, written, self._total_bytes)
            out.write(chunk)

    def _check_sizes(self, name: str, file_bytes: int, total_bytes: int) -> None:
        _check_sizes(self._limits, name, file_bytes, total_bytes)


class _Retar(_EntryCount):
    """A destination that is another tar stream: the checks of _Extraction, made against a model
    of the tree (path -> kind) instead of a directory on disk."""

    def __init__(
        self,
        out: tarfile.TarFile,
        limits: ExtractLimits,
        *,
        root: str,
        context_dir: str | None,
        prefix: str,
        links_anywhere: bool,
        keep_git_metadata: bool = False,
    ) -> None:
        super().__init__(limits)
        self._out = out
        self._keep_git_metadata = keep_git_metadata
        self._root = root
        self._context_dir = context_dir
        self._select = "/".join(filter(None, [root, context_dir]))
        self._prefix = prefix
        self._links_anywhere = links_anywhere
        self._tree = _TreeModel()
        empty_directory(prefix)(out)

    def add(self, entry: _Entry, content: Read) -> None:
        if not entry.path:
            if entry.kind != "directory":
                raise InvalidInput(f"archive entry {entry.name!r} names the source root itself")
            return
        parent = self._parent(entry)
        name = entry.path.rpartition("/")[2]
        self._tree.check_free(parent, name, entry)
        if entry.kind == "link":
            (_check_link_is_valid if self._links_anywhere else _check_link_target)(entry)
        elif entry.kind == "hard link":
            entry = replace(entry, link_target=self._hard_link_target(entry))
        elif entry.kind == "file":
            self._total_bytes += entry.size
            _check_sizes(self._limits, entry.name, entry.size, self._total_bytes)
        self._tree.put(parent, name, "file" if entry.kind == "hard link" else entry.kind)
        self._emit(entry, content)

    def _hard_link_target(self, entry: _Entry) -> str:
        """The normalised path of the earlier regular file (or hard link to one) it names."""
        target = _hard_link_path(entry)
        kind = self._tree.kind(target)
        if kind != "file":
            what = {"directory": "a directory", "link": "a link"}
            raise _bad_hard_link(entry, what.get(kind or "", "not a file of the archive before it"))
        return target

    def finish(self) -> None:
        """After the last entry: the source's root and context dir must have been there."""
        if self._tree.kind(self._root) != "directory":
            raise InvalidInput(f"the uploaded source has no directory {self._root!r}")
        if self._tree.kind(self._select) != "directory":
            raise InvalidInput(
                f"--context-dir {self._context_dir!r} is not a directory in the source"
            )

    def _parent(self, entry: _Entry) -> int:
        """The node of the entry's directory: no link or file on the way; the missing ones are
        implied directories."""
        if len(os.fsencode(entry.path)) > _MAX_PATH_BYTES:
            raise InvalidInput(f"archive entry {entry.name!r} has too long a path")
        parent, implied = self._tree.directory_of(entry)
        self._count_implied(implied)
        return parent

    def _emit(self, entry: _Entry, content: Read) -> None:
        if not self._keep_git_metadata and self._is_git_metadata(entry):
            return
        select = self._select
        if entry.kind != "directory" and entry.path in (self._root, select):
            what = "source root" if entry.path == self._root else "--context-dir"
            raise InvalidInput(
                f"the {what} {entry.name!r} is a {entry.kind}, not a directory: "
                "sti does not follow it"
            )
        if select and entry.path == select:
            return
        if select and not entry.path.startswith(f"{select}/"):
            return
        relative = self._relative(entry.path)
        info = tarfile.TarInfo(f"{self._prefix}/{relative}")
        info.mode = entry.mode & 0o7777 if entry.kind == "link" else entry.mode & 0o755
        info.mtime = int(entry.mtime or 0)
        if entry.kind == "directory":
            info.type = tarfile.DIRTYPE
            info.mode |= 0o700
            self._out.addfile(info)
        elif entry.kind == "link":
            info.type, info.linkname = tarfile.SYMTYPE, entry.link_target
            self._out.addfile(info)
        elif entry.kind == "hard link":
            if select and not entry.link_target.startswith(f"{select}/"):
                outside = f"outside {select!r}, the part of the archive the build takes"
                raise _bad_hard_link(entry, outside)
            info.type = tarfile.LNKTYPE
            info.linkname = f"{self._prefix}/{self._relative(entry.link_target)}"
            self._out.addfile(info)
        else:
            info.size = entry.size
            self._out.addfile(info, _ReadAdapter(content))

    def _relative(self, path: str) -> str:
        return path[len(self._select) + 1 :] if self._select else path

    @staticmethod
    def _is_git_metadata(entry: _Entry) -> bool:
        """Left out, as a directory source's is (read, checked and counted all the same); a
        hard link to it would name what the build does not have."""
        if in_git_metadata(entry.path):
            return True
        if entry.kind == "hard link":
            _check_not_linked_into_git_metadata(entry)
        return False


def _check_not_linked_into_git_metadata(entry: _Entry) -> None:
    """A hard link to a file in .git is refused by both destinations: re-tarred, the file is
    left out; on disk, the link would be a second name for it, packed as a file of its own."""
    if in_git_metadata(entry.link_target):
        raise InvalidInput(
            f"archive entry {entry.name!r} is a hard link to {entry.link_target!r}, git "
            "metadata, which is never part of a source"
        )


_ROOT_NODE = 0


class _TreeModel:
    """The kind of every path an archive named or implied, kept as a tree of names: it grows
    with the names (255 bytes at most, one per entry or implied directory), not with the paths
    (4 KiB each, which a few KB of compressed archive can repeat 100,000 times)."""

    def __init__(self) -> None:
        self._kinds: list[EntryKind] = ["directory"]  # by node
        self._children: dict[tuple[int, str], int] = {}
        self._last: tuple[str, int] = ("", _ROOT_NODE)  # the last directory asked for

    def kind(self, path: str) -> EntryKind | None:
        node = _ROOT_NODE
        for name in path.split("/") if path else ():
            found = self._children.get((node, name))
            if found is None:
                return None
            node = found
        return self._kinds[node]

    def kind_below(self, parent: int, name: str) -> EntryKind | None:
        found = self._children.get((parent, name))
        return None if found is None else self._kinds[found]

    def check_free(self, parent: int, name: str, entry: _Entry) -> None:
        """Refuse an entry whose name an earlier one took (but a directory named again)."""
        existing = self.kind_below(parent, name)
        if existing is not None and not (existing == entry.kind == "directory"):
            if existing == "link" and entry.kind != "link":
                raise _through_link(entry.name)
            raise _appears_twice(entry.name)

    def directory_of(self, entry: _Entry) -> tuple[int, int]:
        """The node of the entry's directory and how many directories were implied (made in
        the model) on the way; refused when something but a directory is on the way."""
        parent, implied, below = self.directory(entry.path.rpartition("/")[0])
        if below is not None:
            where, kind = below
            if kind == "link":
                raise _through_link(entry.name)
            raise InvalidInput(f"archive entry {entry.name!r} is below {where!r}, not a directory")
        return parent, implied

    def put(self, parent: int, name: str, kind: EntryKind) -> int:
        node = self._children.get((parent, name))
        if node is None:
            node = len(self._kinds)
            self._kinds.append(kind)
            self._children[(parent, name)] = node
        else:
            self._kinds[node] = kind
        return node

    def directory(self, path: str) -> tuple[int, int, tuple[str, EntryKind] | None]:
        """The node of the directory at path, made (with the directories above it) where
        missing; how many were made; and the path and kind of what is in the way, if anything
        but a directory is."""
        if not path:
            return _ROOT_NODE, 0, None
        if path == self._last[0]:  # an archive lists a directory's entries together
            return self._last[1], 0, None
        node, made, names = _ROOT_NODE, 0, path.split("/")
        for depth, name in enumerate(names):
            found = self._children.get((node, name))
            if found is None:
                found, made = self.put(node, name, "directory"), made + 1
            elif self._kinds[found] != "directory":
                return found, made, ("/".join(names[: depth + 1]), self._kinds[found])
            node = found
        self._last = (path, node)
        return node, made, None


class _ReadAdapter:
    """A file object over a Read function, for tarfile.addfile."""

    def __init__(self, read: Read) -> None:
        self.read = read


def _check_sizes(limits: ExtractLimits, name: str, file_bytes: int, total_bytes: int) -> None:
    if file_bytes < 0:
        raise InvalidInput(f"archive entry {name!r} has a negative size")
    if limits.max_file_bytes is not None and file_bytes > limits.max_file_bytes:
        raise InvalidInput(
            f"archive entry {name!r} is larger than {limits.max_file_bytes} bytes, the limit for "
            "one file (STI_SOURCE_MAX_BYTES)"
        )
    if total_bytes > limits.max_total_bytes:
        raise InvalidInput(
            f"archive entry {name!r} takes the extracted source over "
            f"{limits.max_total_bytes} bytes (STI_SOURCE_MAX_BYTES)"
        )


def _too_many_files(limits: ExtractLimits) -> InvalidInput:
    return InvalidInput(
        f"the archive holds more than {limits.max_files} files, directories and links "
        "(STI_SOURCE_MAX_FILES)"
    )


def _relative_path(name: str, *, windows_rules: bool) -> str:
    """The entry's path below the root in POSIX form ("" for the root itself), or a refusal."""
    if not name:
        raise InvalidInput("the archive has an entry with an empty name")
    if "\x00" in name:
        raise InvalidInput(f"archive entry {name!r} has a NUL byte in its name")
    if name.startswith("/") or (windows_rules and (name.startswith("\\") or _DRIVE.match(name))):
        raise InvalidInput(f"archive entry {name!r} has an absolute path")
    if windows_rules and "\\" in name:
        raise InvalidInput(f"archive entry {name!r} has a backslash in its name")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise InvalidInput(f"archive entry {name!r} points outside the source root")
    if any(len(os.fsencode(part)) > _MAX_NAME_BYTES for part in parts):
        raise InvalidInput(f"archive entry {name!r} has a name longer than {_MAX_NAME_BYTES} bytes")
    if len(parts) > MAX_DEPTH:
        raise InvalidInput(f"archive entry {name[:80]!r}... is over {MAX_DEPTH} directories deep")
    return "/".join(parts)


def _check_link_is_valid(entry: _Entry) -> None:
    target = entry.link_target
    if not target or "\x00" in target or len(os.fsencode(target)) > _MAX_LINK_TARGET_BYTES:
        raise InvalidInput(f"archive entry {entry.name!r} is a link without a valid target")


def _check_link_target(entry: _Entry) -> None:
    _check_link_is_valid(entry)
    name, target = entry.name, entry.link_target
    if target.startswith("/"):
        raise InvalidInput(f"archive entry {name!r} is a link to the absolute path {target!r}")
    parts = [part for part in target.split("/") if part not in ("", ".")]
    ups = sum(1 for _ in itertools.takewhile(lambda part: part == "..", parts))
    # A ".." after a name is resolved through that name, which may itself be a link (to "..",
    # say), so only leading ones can be checked by text alone. With them, and with no entry
    # ever written through a link, every link resolves inside the root.
    if ".." in parts[ups:]:
        raise InvalidInput(
            f"archive entry {name!r} is a link to {target!r}: '..' may only start a link target"
        )
    if ups > entry.path.count("/"):
        raise InvalidInput(
            f"archive entry {name!r} is a link to {target!r}, which points outside the source root"
        )


def _hard_link_path(entry: _Entry) -> str:
    """A hard link's target as the archive's own path of an earlier entry, normalised."""
    target = entry.link_target
    if not target or target.startswith("/") or len(os.fsencode(target)) > _MAX_LINK_TARGET_BYTES:
        raise _bad_hard_link(entry, "not a path in the archive")
    try:
        return _relative_path(target, windows_rules=False)
    except InvalidInput:
        raise _bad_hard_link(entry, "not a path in the archive") from None


def _bad_hard_link(entry: _Entry, what: str) -> InvalidInput:
    return InvalidInput(
        f"archive entry {entry.name!r} is a hard link to {entry.link_target!r}, which is {what}: "
        "a hard link must name a regular file that comes before it"
    )


def _through_link(name: str) -> InvalidInput:
    return InvalidInput(f"archive entry {name!r} would write through a link")


def _appears_twice(name: str) -> InvalidInput:
    return InvalidInput(f"archive entry {name!r} appears twice")


def _not_allowed(name: str, what: str) -> InvalidInput:
    return InvalidInput(f"archive entry {name!r} is a {what}: {what}s are not allowed")


def _sparse(name: str) -> InvalidInput:
    return InvalidInput(f"archive entry {name!r} is a sparse file: sparse files are not supported")


# decoding


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _WatchedStream:
    """The caller's stream, remembering whether reading it failed (rather than decoding it)."""

    def __init__(self, stream: _Readable) -> None:
        self._stream = stream
        self.failure: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._stream.read(size)
        except Exception as error:
            self.failure = error
            raise


class _DecodeGuard:
    """Turns errors met decoding an archive into InvalidInput; the source's own read errors (a
    broken download, say) and sti's errors pass through unchanged."""

    def __init__(self, kind: str, source: _WatchedStream | None = None) -> None:
        self._kind = kind
        self._source = source

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None or isinstance(error, StiError) or not isinstance(error, _DECODE_ERRORS):
            return
        if self._source is not None and self._source.failure is not None:
            return
        reason = str(error) or type(error).__name__
        raise InvalidInput(f"the source is not a valid {self._kind} archive: {reason}") from error


def _guarded(read: Read, guard: _DecodeGuard) -> Read:
    def guarded_read(size: int) -> bytes:
        with guard:
            return read(size)

    return guarded_read


def _nothing(size: int) -> bytes:
    return b""


# tar


_TAR_KINDS = ("tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst")  # tar.zst: packed uploads only
_TAR_READ_BYTES = 64 * 1024  # tarfile's default, 10 KiB, costs a decompress call per read;
# more costs a copy of the rest of the buffer per header read


def _decompressed(source: _WatchedStream, kind: str) -> contextlib.AbstractContextManager[Any]:
    if kind == "tar.gz":
        return BackgroundGunzip(source)
    if kind == "tar.zst":
        return BackgroundUnzstd(source)
    if kind == "tar.bz2":
        return bz2.BZ2File(source, "rb")
    if kind == "tar.xz":
        return lzma.LZMAFile(source, "rb")
    return contextlib.nullcontext(source)


class _CheckedTarInfo(tarfile.TarInfo):
    """Refuses, before tarfile reads them into memory whole, oversized or endless extended headers
    and sparse files (whose maps can grow without bound); broken headers end nothing silently."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as error:
            # tarfile would take a broken header after the first one for the end of the archive
            raise tarfile.ReadError(str(error)) from error

    def _proc_member(self, tar: _CheckedTarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise _sparse(self.name)
        if "size" in tar.pax_headers:
            # tarfile finds the next header by the size in this one, and reads the content by
            # the global size: what comes after it would be read twice or not at all
            raise InvalidInput("the archive has a global header setting the size of every entry")
        if self.type in _EXTENDED_HEADER_TYPES:
            tar.extended_headers_in_a_row += 1
            _check_extended_header(self, tar)
        else:
            tar.extended_headers_in_a_row = 0
        return super()._proc_member(tar)

    def _proc_gnusparse_00(  # type: ignore[override]
        self, next_member: tarfile.TarInfo, pax_headers: dict[str, str], buf: bytes
    ) -> None:
        raise _sparse(next_member.name)

    def _proc_gnusparse_01(  # type: ignore[override]
        self, next_member: tarfile.TarInfo, pax_headers: dict[str, str]
    ) -> None:
        raise _sparse(next_member.name)

    def _proc_gnusparse_10(  # type: ignore[override]
        self, next_member: tarfile.TarInfo, pax_headers: dict[str, str], tar: tarfile.TarFile
    ) -> None:
        raise _sparse(next_member.name)

    def _apply_pax_info(self, pax_headers: dict[str, str], encoding: str, errors: str) -> None:
        if pax_headers:  # for every member, most with none
            _check_pax_numbers(pax_headers, pax_headers.get("path", self.name))
            super()._apply_pax_info(pax_headers, encoding, errors)  # type: ignore[misc]
        else:
            self.pax_headers = {}


class _CheckedTarFile(tarfile.TarFile):
    tarinfo = _CheckedTarInfo
    extended_headers_in_a_row = 0
    global_header_bytes = 0


def _check_extended_header(header: tarfile.TarInfo, tar: _CheckedTarFile) -> None:
    if not 0 <= header.size <= _MAX_EXTENDED_HEADER_BYTES:
        raise InvalidInput(
            f"the archive has an extended header of {header.size} bytes, more than "
            f"{_MAX_EXTENDED_HEADER_BYTES}"
        )
    if tar.extended_headers_in_a_row > _MAX_EXTENDED_HEADERS_IN_A_ROW:
        raise InvalidInput(
            f"the archive has more than {_MAX_EXTENDED_HEADERS_IN_A_ROW} extended headers in a row"
        )
    if header.type == tarfile.XGLTYPE:
        # tarfile keeps global headers for the rest of the archive
        tar.global_header_bytes += header.size
        if tar.global_header_bytes > _MAX_EXTENDED_HEADER_BYTES:
            raise InvalidInput(
                f"the archive has more than {_MAX_EXTENDED_HEADER_BYTES} bytes of global headers"
            )


def _check_pax_numbers(pax_headers: Mapping[str, str], name: str) -> None:
    for keyword, value in pax_headers.items():
        if keyword.startswith("GNU.sparse."):  # realsize alone would cut the content short
            raise _sparse(name)
        if keyword in _PAX_INTEGER_FIELDS:
            if not _PAX_INTEGER.fullmatch(value) or int(value) > _MAX_PAX_INTEGER:
                raise _bad_number(name, keyword, value)
        elif keyword in _PAX_TIME_FIELDS:
            if not _PAX_TIME.fullmatch(value):
                raise _bad_number(name, keyword, value)
            _check_time(name, keyword, float(value), value)


def _check_time(name: str, field: str, seconds: float, spelled: object) -> None:
    if not -MAX_TIME_S <= seconds <= MAX_TIME_S:  # False for NaN too
        raise _bad_number(name, field, spelled)


def _bad_number(name: str, field: str, value: object) -> InvalidInput:
    shown = value[:40] if isinstance(value, str) else value
    return InvalidInput(f"archive entry {name!r} has an invalid {field} in its header: {shown!r}")


def _next_member(tar: tarfile.TarFile, guard: _DecodeGuard) -> tarfile.TarInfo | None:
    with guard:
        return tar.next()


def _extract_tar_member(
    extraction: _Destination, tar: tarfile.TarFile, member: tarfile.TarInfo, guard: _DecodeGuard
) -> None:
    entry = _tar_entry(member)
    # the extended headers before it (the offsets are of the decompressed stream)
    extension = member.offset_data - member.offset - tarfile.BLOCKSIZE
    extraction.count_header_bytes(entry.name, extension)
    content = _nothing
    if entry.kind == "file":
        extracted = tar.extractfile(member)
        assert extracted is not None
        content = _guarded(extracted.read, guard)
    extraction.add(entry, content)


def _tar_entry(member: tarfile.TarInfo) -> _Entry:
    name = member.name
    path = _relative_path(name, windows_rules=False)
    if member.sparse is not None:
        raise _sparse(name)
    if member.isdir():
        return _Entry(name, path, "directory", member.mode)
    if member.isreg():
        _check_time(name, "mtime", member.mtime, member.mtime)  # a ustar field can be huge
        return _Entry(name, path, "file", member.mode, member.mtime, member.size)
    if member.issym():
        return _Entry(name, path, "link", member.mode, link_target=member.linkname)
    if member.islnk():
        return _Entry(name, path, "hard link", member.mode, link_target=member.linkname)
    if member.type in _SPECIAL_TAR_TYPES:
        raise _not_allowed(name, _SPECIAL_TAR_TYPES[member.type])
    raise InvalidInput(f"archive entry {name!r} has an unsupported type {member.type!r}")


def _read_to_end(data: _Readable, guard: _DecodeGuard) -> None:
    """Read past the tar's end so the compressed stream's checksum is checked; writers pad a tar
    to a record, so what is left is small, and past a bound it is left unread."""
    for _ in range(_MAX_TRAILER_CHUNKS):
        with guard:
            if not data.read(_CHUNK):
                return


# zip


def _extract_zip_member(
    extraction: _Extraction, archive: zipfile.ZipFile, info: zipfile.ZipInfo, guard: _DecodeGuard
) -> None:
    name = info.orig_filename  # ZipInfo.filename is cut at a NUL byte
    path = _relative_path(name, windows_rules=True)
    kind = _zip_entry_kind(info)
    permissions = stat.S_IMODE(_unix_mode(info))
    if kind == "directory":
        extraction.add(_Entry(name, path, kind, permissions or 0o755), _nothing)
        return
    with guard:
        opened = archive.open(info)
    with opened:
        content = _guarded(opened.read, guard)
        if kind == "link":
            target = _zip_link_target(name, content)
            extraction.add(_Entry(name, path, kind, 0o777, link_target=target), _nothing)
        else:
            entry = _Entry(name, path, kind, permissions or 0o644, _zip_mtime(info), info.file_size)
            extraction.add(entry, content)


def _unix_mode(info: zipfile.ZipInfo) -> int:
    return info.external_attr >> 16 if info.create_system == _UNIX else 0


def _zip_entry_kind(info: zipfile.ZipInfo) -> EntryKind:
    name = info.orig_filename
    file_type = stat.S_IFMT(_unix_mode(info))
    if file_type in _SPECIAL_FILE_TYPES:
        raise _not_allowed(name, _SPECIAL_FILE_TYPES[file_type])
    if name.endswith("/") or file_type == stat.S_IFDIR:
        if file_type not in (0, stat.S_IFDIR):
            raise InvalidInput(f"archive entry {name!r} is named as a directory but is not one")
        return "directory"
    if file_type == stat.S_IFLNK:
        return "link"
    if file_type in (0, stat.S_IFREG):
        return "file"
    raise InvalidInput(f"archive entry {name!r} has an unsupported type {oct(file_type)}")


def _zip_link_target(name: str, content: Read) -> str:
    target = b""
    while len(target) <= _MAX_LINK_TARGET_BYTES and (
        chunk := content(_MAX_LINK_TARGET_BYTES + 1 - len(target))
    ):
        target += chunk
    if len(target) > _MAX_LINK_TARGET_BYTES:
        raise InvalidInput(f"archive entry {name!r} is a link without a valid target")
    return os.fsdecode(target)


def _zip_mtime(info: zipfile.ZipInfo) -> float | None:
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None
