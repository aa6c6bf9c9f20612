"""A delta upload (sti.deltas) laid over its base: the tree a whole upload of the directory gives,
as one tar stream, through the checks a whole upload gets (retar_tar_stream's, over both); or,
for a copy of the base that an earlier build left (a source image), only the layer to put over
it, checked against the base all the same.

The delta is read twice: once for its removal list and the names of its entries, then after the
base, whose entries it removes or replaces are left out (read and counted all the same, so the
limits bound the work). A removal list is hostile input: each path is checked (sti.deltas), and
must name an entry of the base that is not below a link or a file. A delta entry below a path
of the base that the delta replaces (a link that becomes a directory) must come after the
entry that replaces it: in a copy of the base, it would otherwise be written through the link.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from sti.deltas import MAX_REMOVED_BYTES, REMOVED_MEMBER, ancestors, decode_removed
from sti.errors import InvalidInput

from .archives import (
    EntryKind,
    ExtractLimits,
    Read,
    _Entry,
    _EntryCount,
    _read_tar_stream,
    _Retar,
)


@dataclass
class DeltaIndex:
    """What the first read of a delta found: its removals, and the kind of each of its entries
    (a directory's mode too) by path below the source root."""

    removed: frozenset[str] = frozenset()
    kinds: dict[str, EntryKind] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)


def index_delta(stream: BinaryIO, kind: str, limits: ExtractLimits, *, root: str) -> DeltaIndex:
    """Read a delta (a tar of kind, as packed) for its removal list, its first member, and the
    kinds of its entries below root."""
    reading = _Indexing(limits, root)
    _read_tar_stream(stream, kind, reading)
    if not reading.began:
        raise InvalidInput("the delta is empty: it has no removal list")
    return reading.index


def retar_delta(
    base: tuple[BinaryIO, str],
    delta: tuple[BinaryIO, str],
    index: DeltaIndex,
    limits: ExtractLimits,
    out: tarfile.TarFile,
    *,
    root: str,
    context_dir: str | None = None,
    prefix: str = "src",
    layer: bool = False,
) -> int:
    """Copy the base's entries but those the delta removes or replaces, then the delta's, into
    out under prefix, as retar_tar_stream copies one upload (root, context_dir: the same). Each
    of base and delta is a stream and its kind of tar; index is the delta's (index_delta).
    layer: of the base, copy only the directories above the delta's entries (so a copy of the
    base made as a whole upload is, with the same modes and times, once the layer is put over
    it); for a delta that removes nothing (putting an archive removes nothing but what an entry
    replaces). Returns the number of entries read."""
    if layer and index.removed:
        raise ValueError("a delta that removes paths is no layer over a copy of its base")
    merge = _Merge(
        out, limits, index, root=root, context_dir=context_dir, prefix=prefix, layer=layer
    )
    _read_tar_stream(base[0], base[1], merge)
    merge.base_read()
    _read_tar_stream(delta[0], delta[1], merge)
    merge.finish()
    return merge.entries


class _Indexing(_EntryCount):
    def __init__(self, limits: ExtractLimits, root: str) -> None:
        super().__init__(limits)
        self.index = DeltaIndex()
        self.began = False
        self._below = f"{root}/"

    def add(self, entry: _Entry, content: Read) -> None:
        if not self.began:
            self.began = True
            if entry.path != REMOVED_MEMBER or entry.kind != "file":
                raise InvalidInput(
                    f"the delta begins with {entry.name!r}, not its removal list {REMOVED_MEMBER!r}"
                )
            if entry.size > MAX_REMOVED_BYTES:
                raise InvalidInput(
                    f"the delta's removal list is larger than {MAX_REMOVED_BYTES} bytes"
                )
            self.index.removed = decode_removed(_read(content, entry.size), self._limits.max_files)
            return
        if entry.path.startswith(self._below):
            relative = entry.path[len(self._below) :]
            self.index.kinds[relative] = "file" if entry.kind == "hard link" else entry.kind
            if entry.kind == "directory":
                self.index.modes[relative] = entry.mode


class _Merge(_Retar):
    def __init__(
        self,
        out: tarfile.TarFile,
        limits: ExtractLimits,
        index: DeltaIndex,
        *,
        root: str,
        context_dir: str | None,
        prefix: str,
        layer: bool,
    ) -> None:
        super().__init__(
            out, limits, root=root, context_dir=context_dir, prefix=prefix, links_anywhere=True
        )
        self._index = index
        # with layer, the base's directories the layer writes: those the delta writes into
        self._layered = {a for p in index.kinds for a in ancestors(p)} if layer else None
        self._below = f"{root}/"
        self._in_base = True
        self._found: set[str] = set()
        # a directory above a removed path -> that path (for the message)
        self._above_removed = {a: path for path in index.removed for a in ancestors(path)}
        # paths the delta sends as something else than a directory: the base's entries below
        # them go
        self._not_directories = {p for p, kind in index.kinds.items() if kind != "directory"}
        self._skipped_not_directories: set[str] = set()
        self._merged: set[str] = set()  # directories of both, written with the delta's mode

    def add(self, entry: _Entry, content: Read) -> None:
        relative = self._relative_to_root(entry.path)
        if relative is None:
            super().add(entry, content)
        elif self._in_base:
            kept = self._kept(entry, relative)
            if kept is None:
                self._skip(entry, relative)
            else:
                super().add(kept, content)
        elif not (entry.kind == "directory" and relative in self._merged):
            self._check_replaced_first(entry, relative)
            super().add(entry, content)

    def _emit(self, entry: _Entry, content: Read) -> None:
        if not self._in_copy(entry):
            super()._emit(entry, content)

    def _in_copy(self, entry: _Entry) -> bool:
        """Whether a layer leaves the entry to the copy of the base it goes over."""
        relative = self._relative_to_root(entry.path)
        if self._layered is None or not self._in_base or relative is None:
            return False
        return relative not in self._merged and relative not in self._layered

    def _check_replaced_first(self, entry: _Entry, relative: str) -> None:
        """Below a path of the base that the delta replaced, only once the delta has."""
        if not self._skipped_not_directories:
            return
        for above in ancestors(relative):
            replaced = above in self._skipped_not_directories
            if replaced and self._tree.kind(f"{self._root}/{above}") != "directory":
                raise InvalidInput(
                    f"archive entry {entry.name!r} comes before the directory that replaces "
                    f"{above!r} of its base: it would be written through what the base has there"
                )

    def base_read(self) -> None:
        """Between the base and the delta: every removed path was in the base."""
        self._in_base = False
        missing = sorted(self._index.removed - self._found)
        if missing:
            raise InvalidInput(
                f"the delta removes {missing[0][:200]!r}, which its base does not have: "
                "it is not a delta of that upload"
            )

    def _relative_to_root(self, path: str) -> str | None:
        return path[len(self._below) :] if path.startswith(self._below) else None

    def _kept(self, entry: _Entry, relative: str) -> _Entry | None:
        """The base's entry as the merged tree has it, or None if the delta removes or replaces
        it (or something above it)."""
        above = self._above_removed.get(relative)
        if above is not None and entry.kind != "directory":
            raise InvalidInput(
                f"the delta removes {above[:200]!r}, below {entry.name!r}, which is a "
                f"{entry.kind}, not a directory: nothing is removed through a {entry.kind}"
            )
        removed = self._index.removed
        if relative in removed:
            self._found.add(relative)
            return None
        replaced = self._index.kinds.get(relative)
        if self._skipped_not_directories or removed or self._not_directories:
            up = set(ancestors(relative))
            if not self._skipped_not_directories.isdisjoint(up):
                raise InvalidInput(
                    f"archive entry {entry.name!r} is below an entry that is not a directory"
                )
            if not (removed.isdisjoint(up) and self._not_directories.isdisjoint(up)):
                return None
        if replaced == "directory" and entry.kind == "directory":
            self._merged.add(relative)
            return replace(entry, mode=self._index.modes[relative])
        return None if replaced is not None else entry

    def _skip(self, entry: _Entry, relative: str) -> None:
        """Left out, but counted (the limits bound what is read, kept or not)."""
        if entry.kind == "file":
            self._total_bytes += entry.size
            if self._total_bytes > self._limits.max_total_bytes:
                raise InvalidInput(
                    f"archive entry {entry.name!r} takes the base and the delta over "
                    f"{self._limits.max_total_bytes} bytes (STI_SOURCE_MAX_BYTES)"
                )
        if entry.kind != "directory":
            self._skipped_not_directories.add(relative)


def _read(content: Read, size: int) -> bytes:
    data = bytearray()
    while len(data) < size and (chunk := content(size - len(data))):
        data += chunk
    return bytes(data)
