"""Counting the entries of a zip's central directory without building them.

zipfile turns the whole central directory into ZipInfo objects as it opens an archive, about
ten times its size in memory and whatever the end record declares (it walks the directory by
its size, not its count): a crafted download of 100 MB of 46-byte entries is two million
objects before any limit applies. Walking the same bytes here first, headers only, lets the
entry limit apply before zipfile reads anything. The region walked is the one zipfile reads.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

_END = b"PK\x05\x06"
_END_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_END = b"PK\x06\x06"
_ZIP64_END_SIZE = 56
_ENTRY = b"PK\x01\x02"
_ENTRY_SIZE = 46
_MAX_COMMENT = 0xFFFF


def count_entries(path: Path, stop_after: int) -> int:
    """How many entries the central directory holds, counting at most stop_after + 1; 0 when
    no end record is found (zipfile then refuses the file itself)."""
    with path.open("rb") as archive:
        archive.seek(0, 2)
        file_size = archive.tell()
        tail_size = min(file_size, _END_SIZE + _MAX_COMMENT)
        archive.seek(file_size - tail_size)
        tail = archive.read(tail_size)
        at = tail.rfind(_END)
        if at < 0 or len(tail) - at < _END_SIZE:
            return 0
        end_position = file_size - tail_size + at
        (directory_size,) = struct.unpack("<I", tail[at + 12 : at + 16])
        region_end = end_position
        locator_at = at - _ZIP64_LOCATOR_SIZE
        if locator_at >= 0 and tail[locator_at : locator_at + 4] == _ZIP64_LOCATOR:
            zip64_position = end_position - _ZIP64_LOCATOR_SIZE - _ZIP64_END_SIZE
            archive.seek(max(zip64_position, 0))
            record = archive.read(_ZIP64_END_SIZE)
            if len(record) == _ZIP64_END_SIZE and record[:4] == _ZIP64_END:
                (directory_size,) = struct.unpack("<Q", record[40:48])
                region_end = zip64_position
        return _walk(archive, max(region_end - directory_size, 0), region_end, stop_after)


def _walk(archive: BinaryIO, start: int, end: int, stop_after: int) -> int:
    count, position = 0, start
    while position + _ENTRY_SIZE <= end and count <= stop_after:
        archive.seek(position)
        header = archive.read(_ENTRY_SIZE)
        if len(header) < _ENTRY_SIZE or header[:4] != _ENTRY:
            break  # zipfile refuses a broken directory itself
        name, extra, comment = struct.unpack("<HHH", header[28:34])
        position += _ENTRY_SIZE + name + extra + comment
        count += 1
    return count
