"""Tar streams composed on the fly: directories, other tar streams and small files in, chunks out.

A producer thread writes the archive into a bounded queue, so memory stays flat however large
the source is, and a consumer (docker-py's request body) reads it as an iterator of bytes.
"""

from __future__ import annotations

import io
import os
import posixpath
import queue
import stat
import tarfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import InvalidInput

TarPart = Callable[[tarfile.TarFile], None]
Chunks = Iterator[bytes]

_CHUNK = 256 * 1024  # the least a chunk holds: a hand-over between threads costs
_QUEUE_DEPTH = 8


class _Abandoned(Exception):
    """The consumer went away; the producer stops quietly."""


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class _QueueWriter:
    """The file tarfile writes to: what it writes, in chunks of _CHUNK or more, into a queue."""

    def __init__(self, chunks: queue.Queue[object], abandoned: threading.Event) -> None:
        self._chunks = chunks
        self._abandoned = abandoned
        self._pending = bytearray()
        self._written = 0

    def write(self, data: bytes) -> int:
        self._pending += data
        self._written += len(data)
        if len(self._pending) >= _CHUNK:
            self.flush()
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        if self._pending:
            self._put(bytes(self._pending))
            self._pending.clear()

    def _put(self, item: object) -> None:
        while True:
            if self._abandoned.is_set():
                raise _Abandoned
            try:
                self._chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue


class IterReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")  # a small read off a big chunk copies nothing

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


_SIMPLE_TYPES = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)
_NUL = b"\0"


def ustar_header(info: tarfile.TarInfo) -> bytes | None:
    """The header tarfile writes for info in PAX format, made without its per-field checks
    (a third of the time of packing a tree of small files), for the members that need no
    extended header: ASCII names within the ustar fields, integral times, sizes and ids in
    range. None for any other member (tarfile writes it)."""
    name = info.name
    if info.type == tarfile.DIRTYPE and not name.endswith("/"):
        name += "/"
    mtime, size = info.mtime, info.size
    if not (
        info.type in _SIMPLE_TYPES
        and len(name) <= 100
        and len(info.linkname) <= 100
        and len(info.uname) <= 32
        and len(info.gname) <= 32
        and (name + info.linkname + info.uname + info.gname).isascii()
        and type(mtime) is int
        and 0 <= mtime < 8**11
        and 0 <= size < 8**11
        and 0 <= info.uid < 8**7
        and 0 <= info.gid < 8**7
        and not info.pax_headers
        and _NUL not in (name + info.linkname).encode()
    ):
        return None
    header = b"".join(
        [
            name.encode().ljust(100, _NUL),
            b"%07o\0" % (info.mode & 0o7777),
            b"%07o\0" % info.uid,
            b"%07o\0" % info.gid,
            b"%011o\0" % size,
            b"%011o\0" % mtime,
            b"        ",  # the checksum counts its own field as spaces
            info.type,
            info.linkname.encode().ljust(100, _NUL),
            tarfile.POSIX_MAGIC,
            info.uname.encode().ljust(32, _NUL),
            info.gname.encode().ljust(32, _NUL),
            _NUL * 183,  # device numbers (none), prefix and padding
        ]
    )
    return header[:148] + b"%06o\0 " % sum(header) + header[156:]


class _FastTar:
    """A TarFile whose simple members are written with ustar_header and their content copied
    in large reads; the rest as tarfile writes them. The archive is the same bytes."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar

    def addfile(self, info: tarfile.TarInfo, fileobj: Any = None) -> None:
        header = ustar_header(info)
        if header is None:
            self._tar.addfile(info, fileobj)
            # a TarFile keeps every member it writes: a stream of 100,000 is never read back
            self._tar.members.clear()
            return
        tar = self._tar
        out = tar.fileobj
        out.write(header)  # type: ignore[union-attr]
        tar.offset += tarfile.BLOCKSIZE
        if fileobj is None or info.type != tarfile.REGTYPE:
            return
        left = info.size
        while left:
            data = fileobj.read(min(left, _CHUNK))
            if not data:
                raise OSError("unexpected end of data")
            out.write(data)  # type: ignore[union-attr]
            left -= len(data)
        padding = -info.size % tarfile.BLOCKSIZE
        if padding:
            out.write(_NUL * padding)  # type: ignore[union-attr]
        tar.offset += info.size + padding

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tar, name)


class _Owned:
    """A TarFile whose added members all belong to one numeric owner."""

    def __init__(self, tar: tarfile.TarFile, owner: tuple[int, int]) -> None:
        self._tar = tar
        self._owner = owner

    def addfile(self, info: tarfile.TarInfo, fileobj: Any = None) -> None:
        info.uid, info.gid = self._owner
        info.uname = info.gname = ""
        self._tar.addfile(info, fileobj)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tar, name)


def file_chunks(path: Path, size: int = 1024 * 1024) -> Chunks:
    """A file's bytes in chunks, read as they are consumed."""
    with path.open("rb") as stream:
        while chunk := stream.read(size):
            yield chunk


def stream_tar(parts: Iterable[TarPart], owner: tuple[int, int] | None = None) -> Chunks:
    """Yield the bytes of one tar archive made of parts, each adding members to it (owned by
    owner's uid and gid when given, else by root)."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=_QUEUE_DEPTH)
    abandoned = threading.Event()
    writer = _QueueWriter(chunks, abandoned)

    def produce() -> None:
        try:
            # not tarfile's stream mode: its buffer is copied whole on every write
            with tarfile.open(
                fileobj=writer,  # type: ignore[arg-type]
                mode="w",
                format=tarfile.PAX_FORMAT,
            ) as tar:
                fast = _FastTar(tar)
                target = _Owned(fast, owner) if owner else fast
                for part in parts:
                    part(target)  # type: ignore[arg-type]
            writer.flush()
            writer._put(_DONE)
        except _Abandoned:
            return
        except BaseException as error:  # handed to the consumer, which re-raises it
            try:
                writer._put(_Failure(error))
            except _Abandoned:
                return

    producer = threading.Thread(target=produce, name="sti-tar", daemon=True)
    producer.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        abandoned.set()
        producer.join(timeout=5)


def _checked_name(name: str) -> str:
    """Normalise an archive member name; refuse absolute paths and parent references."""
    if name.startswith("/") or "\x00" in name:
        raise InvalidInput(f"archive entry {name!r} has an absolute path")
    normal = posixpath.normpath(name)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{name}/":
        raise InvalidInput(f"archive entry {name!r} points outside the archive root")
    return "" if normal == "." else normal


Recorder = Callable[[str, os.stat_result, str], None]


def directory(
    root: Path,
    prefix: str,
    skip: Callable[[str], bool] | None = None,
    record: Recorder | None = None,
) -> TarPart:
    """A part adding the tree at root under prefix; links are kept as links, never followed.

    skip receives each path relative to root (POSIX form, directories with a trailing "/");
    record, each entry added (its path relative to root, the lstat it was written from, its
    link target).
    """

    def add(tar: tarfile.TarFile) -> None:
        tar.addfile(_dir_info(prefix, root.stat().st_mode))
        for relative, _ in walk(root, skip):
            add_path(tar, root, relative, prefix, record)

    return add


def walk(root: Path, skip: Callable[[str], bool] | None = None) -> Iterator[tuple[str, bool]]:
    """The paths below root that directory() packs, in its order, relative to root (POSIX),
    each with whether os.walk took it for a directory (a link to one included)."""
    for current, dirnames, filenames in os.walk(root, followlinks=False):
        relative_dir = Path(current).relative_to(root).as_posix()
        relative_dir = "" if relative_dir == "." else f"{relative_dir}/"
        dirnames.sort()
        kept = []
        for name in dirnames:
            if skip and skip(f"{relative_dir}{name}/"):
                continue
            if not Path(current, name).is_symlink():
                kept.append(name)
            yield f"{relative_dir}{name}", True
        dirnames[:] = kept
        for name in sorted(filenames):
            if skip and skip(f"{relative_dir}{name}"):
                continue
            yield f"{relative_dir}{name}", False


def add_path(
    tar: tarfile.TarFile, root: Path, relative: str, prefix: str, record: Recorder | None = None
) -> None:
    """What tarfile's gettarinfo gives, without its look-ups of owner names (every member is
    root's) and with every name of a hard-linked file as a file of its own: a link to a name
    outside the part of the tree a build takes (--context-dir) would name nothing there, so
    the same tree builds the same whether it is read here or packed and sent."""
    path = root / relative
    found = path.lstat()
    mode = found.st_mode
    info = tarfile.TarInfo(f"{prefix}/{relative}")
    if stat.S_ISREG(mode):
        info.size = found.st_size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    else:
        return  # sockets, fifos and devices are not source
    info.mode = mode
    info.mtime = int(found.st_mtime)  # a fraction of a second would cost a pax header per file
    info.uname = info.gname = "root"
    if record:
        record(relative, found, info.linkname)
    if info.type == tarfile.REGTYPE:
        with path.open("rb") as content:
            tar.addfile(info, content)
    else:
        tar.addfile(info)


def _dir_info(name: str, mode: int = 0o755) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = stat.S_IMODE(mode) or 0o755
    return info


def empty_directory(name: str) -> TarPart:
    def add(tar: tarfile.TarFile) -> None:
        tar.addfile(_dir_info(name))

    return add


def small_file(name: str, data: bytes, mode: int = 0o644) -> TarPart:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = mode
        tar.addfile(info, io.BytesIO(data))

    return add


# what tarfile derives again from a member's fields (and would write as read, over the new ones)
_DERIVED_PAX_KEYWORDS = frozenset(("path", "linkpath", "uid", "gid", "uname", "gname"))


def retargeted(
    open_chunks: Callable[[], Iterable[bytes]],
    from_prefix: str,
    to_prefix: str,
    *,
    s2i_modes: bool = False,
) -> TarPart:
    """A part copying the members of another tar stream, renaming from_prefix to to_prefix.

    Used to hand /tmp/artifacts or /tmp/build taken out of one container to the next one; the
    stream is opened only when the part is written. s2i_modes: directories and executable
    files 0755, other files 0644, as s2i copies runtime artifacts.
    """

    def rename(name: str) -> str:
        name = _checked_name(name)
        if name == from_prefix:
            return to_prefix
        if not name.startswith(f"{from_prefix}/"):
            raise InvalidInput(f"archive entry {name!r} is outside {from_prefix}/")
        return f"{to_prefix}{name[len(from_prefix) :]}"

    def add(tar: tarfile.TarFile) -> None:
        with tarfile.open(fileobj=IterReader(open_chunks()), mode="r|*") as source:
            for member in source:
                # tarfile writes a member's PAX records over its fields: a long or non-ASCII
                # name, or an id past 2**21 (OpenShift's), read from one would be written back
                # over the new name or owner
                member.pax_headers = {
                    keyword: value
                    for keyword, value in member.pax_headers.items()
                    if keyword not in _DERIVED_PAX_KEYWORDS
                }
                member.name = rename(member.name)
                if member.islnk():
                    member.linkname = rename(member.linkname)
                if s2i_modes and (member.isdir() or member.isreg()):
                    member.mode = 0o755 if member.isdir() or member.mode & 0o111 else 0o644
                content = source.extractfile(member) if member.isreg() else None
                tar.addfile(member, content)

    return add
