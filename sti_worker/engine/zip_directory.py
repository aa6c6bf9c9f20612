"""Counting the entries of a zip's central directory without building them.

zipfile turns the whole central directory into ZipInfo objects as it opens an archive, about
ten times its size in memory and whatever the end record declares (it walks the directory by
its size, not its count): a crafted download of 100 MB of 46-byte entries is two million
objects before any limit applies. Walking the same bytes here first, headers only, lets the
entry limit apply before zipfile reads anything. The end record is found as zipfile's
_EndRecData finds it, so the region walked is the one zipfile reads; a zip that other readers
would read differently (two end records, bytes after the comment, a ZIP64 locator pointing
elsewhere, a directory not where its offset says, a count that is not the directory's) is
refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

from sti.errors import InvalidInput

_END = b"PK\x05\x06"
_END_FORMAT = "<4s4H2LH"
_END_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_FORMAT = "<4sLQL"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_END = b"PK\x06\x06"
_ZIP64_END_FORMAT = "<4sQ2H2L4Q"
_ZIP64_END_SIZE = 56
_ZIP64_END_BODY = _ZIP64_END_SIZE - 12  # what its own size field counts, with no extra data
_ENTRY = b"PK\x01\x02"
_ENTRY_SIZE = 46
_SEARCHED = (1 << 16) + _END_SIZE  # zipfile's search: a comment of up to 64 KiB


@dataclass(frozen=True)
class _Directory:
    """What zipfile will take the central directory to be."""

    start: int  # where zipfile reads it from
    end: int
    declared_entries: int


def count_entries(path: Path, stop_after: int) -> int:
    """How many entries the central directory holds, counting at most stop_after + 1 (or what
    the end record declares, when that is already more). A zip that is not one, or that
    readers could read in more than one way, is refused."""
    with path.open("rb") as archive:
        directory = _directory(archive)
        if directory.declared_entries > stop_after:
            return directory.declared_entries
        count = _walk(archive, directory, stop_after)
    if count <= stop_after and count != directory.declared_entries:
        _refuse(
            f"its end record declares {directory.declared_entries} entries, "
            f"its central directory holds {count}"
        )
    return count


def _directory(archive: BinaryIO) -> _Directory:
    archive.seek(0, 2)
    file_size = archive.tell()
    position = _end_record_position(archive, file_size)
    archive.seek(position)
    (_, disk, directory_disk, disk_entries, entries, size, offset, _) = struct.unpack(
        _END_FORMAT, archive.read(_END_SIZE)
    )
    end = position
    zip64 = _zip64_end_record(archive, position)
    if zip64 is not None:
        (_, _, _, _, disk, directory_disk, disk_entries, entries64, size64, offset64) = zip64
        _check_saturated_or_equal(entries, entries64, 0xFFFF, "entry count")
        _check_saturated_or_equal(size, size64, 0xFFFFFFFF, "central directory size")
        _check_saturated_or_equal(offset, offset64, 0xFFFFFFFF, "central directory offset")
        entries, size, offset = entries64, size64, offset64
        end = position - _ZIP64_LOCATOR_SIZE - _ZIP64_END_SIZE
    if disk != 0 or directory_disk != 0 or disk_entries != entries:
        _refuse("it spans more than one disk")
    start = end - size
    if start < 0:
        _refuse(f"its central directory of {size} bytes is larger than what precedes it")
    if start != offset:
        # zipfile reads the directory just before the end record and shifts every offset
        # by the difference (data put in front of a zip); other readers go by the offset
        _refuse(
            f"its central directory is at byte {start}, its end record says {offset} "
            "(data put in front of the zip?)"
        )
    return _Directory(start, end, entries)


def _end_record_position(archive: BinaryIO, file_size: int) -> int:
    """Where zipfile finds the end record: the last 22 bytes when they are one with no
    comment, else the last signature in the last 64 KiB. It must be the only record there
    whose comment ends the file."""
    if file_size < _END_SIZE:
        _refuse("it is too short to be one")
    tail_start = max(file_size - _SEARCHED, 0)
    archive.seek(tail_start)
    tail = archive.read()
    last = len(tail) - _END_SIZE
    if tail[last : last + 4] == _END and tail[-2:] == b"\0\0":
        chosen = last
    else:
        chosen = tail.rfind(_END)
        if chosen < 0 or chosen > last:
            _refuse("it has no end of central directory record")
    whole = [at for at in _signatures(tail) if _comment_ends_the_file(tail, at)]
    if chosen not in whole:
        (comment,) = struct.unpack("<H", tail[chosen + 20 : chosen + 22])
        _refuse(
            f"its end record at byte {tail_start + chosen} has a comment of {comment} bytes, "
            f"and {len(tail) - chosen - _END_SIZE} bytes follow it"
        )
    if len(whole) > 1:
        _refuse(
            "it has more than one end of central directory record (at bytes "
            + ", ".join(str(tail_start + at) for at in whole)
            + ")"
        )
    return tail_start + chosen


def _signatures(tail: bytes) -> list[int]:
    found, at = [], tail.find(_END)
    while at >= 0:
        found.append(at)
        at = tail.find(_END, at + 1)
    return found


def _comment_ends_the_file(tail: bytes, at: int) -> bool:
    if len(tail) - at < _END_SIZE:
        return False
    (comment,) = struct.unpack("<H", tail[at + 20 : at + 22])
    return at + _END_SIZE + comment == len(tail)


def _zip64_end_record(archive: BinaryIO, position: int) -> tuple[int, ...] | None:
    """The ZIP64 end record zipfile uses: the one just before the locator just before the end
    record (zipfile never reads the locator's offset, so it must point there)."""
    if position < _ZIP64_LOCATOR_SIZE:
        return None
    archive.seek(position - _ZIP64_LOCATOR_SIZE)
    signature, disk, record_offset, disks = struct.unpack(
        _ZIP64_LOCATOR_FORMAT, archive.read(_ZIP64_LOCATOR_SIZE)
    )
    if signature != _ZIP64_LOCATOR:
        return None
    if disk != 0 or disks > 1:
        _refuse("it spans more than one disk")
    record_position = position - _ZIP64_LOCATOR_SIZE - _ZIP64_END_SIZE
    if record_position < 0:
        _refuse("its ZIP64 locator has no ZIP64 end record before it")
    archive.seek(record_position)
    record = struct.unpack(_ZIP64_END_FORMAT, archive.read(_ZIP64_END_SIZE))
    if record[0] != _ZIP64_END:
        _refuse(f"its ZIP64 locator is not preceded by a ZIP64 end record (at {record_position})")
    if record_offset != record_position:
        _refuse(
            f"its ZIP64 locator points to byte {record_offset}, "
            f"its ZIP64 end record is at {record_position}"
        )
    if record[1] != _ZIP64_END_BODY:
        _refuse(f"its ZIP64 end record claims {record[1]} bytes, not {_ZIP64_END_BODY}")
    return record


def _check_saturated_or_equal(value: int, zip64_value: int, saturated: int, what: str) -> None:
    """Readers that take the ZIP64 value only when the plain one is saturated must agree."""
    if value not in (saturated, zip64_value):
        _refuse(f"its end records disagree on the {what} ({value} and {zip64_value})")


def _walk(archive: BinaryIO, directory: _Directory, stop_after: int) -> int:
    count, position = 0, directory.start
    archive.seek(position)
    while position < directory.end and count <= stop_after:
        header = archive.read(_ENTRY_SIZE)
        if len(header) < _ENTRY_SIZE or header[:4] != _ENTRY:
            _refuse(f"its central directory has no entry header at byte {position}")
        name, extra, comment = struct.unpack("<HHH", header[28:34])
        variable = name + extra + comment
        archive.seek(variable, 1)
        position += _ENTRY_SIZE + variable
        count += 1
    if count <= stop_after and position != directory.end:
        _refuse(f"its central directory's last entry runs past its end (to byte {position})")
    return count


def _refuse(reason: str) -> NoReturn:
    raise InvalidInput(f"the source is not a valid zip archive: {reason}")
