"""A zip's central directory counted before zipfile reads it: the entry limit applies to what
the directory holds, whatever its end record declares, and reading stops at the limit."""

from __future__ import annotations

import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from sti.errors import InvalidInput
from sti_worker.engine.archives import ExtractLimits, extract_zip
from sti_worker.engine.zip_directory import count_entries


def _zip(path: Path, entries: int, *, zip64: bool = False, comment: bytes = b"") -> Path:
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
        for index in range(entries):
            archive.writestr(f"f{index}", b"")
        archive.comment = comment
    if zip64:  # rewrite with a ZIP64 end record, as tools do past 65,535 entries
        data = bytearray(path.read_bytes())
        end = data.rfind(b"PK\x05\x06")
        size, offset = struct.unpack("<II", data[end + 12 : end + 20])
        record = b"PK\x06\x06" + struct.pack(
            "<QHHIIQQQQ", 44, 45, 45, 0, 0, entries, entries, size, offset
        )
        locator = b"PK\x06\x07" + struct.pack("<IQI", 0, end, 1)
        tail = bytearray(data[end:])
        tail[8:16] = struct.pack("<HHI", 0xFFFF, 0xFFFF, 0xFFFFFFFF)
        path.write_bytes(bytes(data[:end]) + record + locator + bytes(tail))
    return path


@pytest.mark.parametrize("zip64", [False, True])
def test_the_entries_are_counted_as_zipfile_reads_them(tmp_path: Path, zip64: bool) -> None:
    path = _zip(tmp_path / "a.zip", 37, zip64=zip64, comment=b"an archive comment")
    assert count_entries(path, stop_after=1000) == 37
    assert len(zipfile.ZipFile(path).infolist()) == 37


def test_a_declared_count_over_the_limit_is_taken_without_walking(tmp_path: Path) -> None:
    assert count_entries(_zip(tmp_path / "a.zip", 500), stop_after=10) == 500


def test_counting_stops_just_past_the_limit_whatever_the_count_declared(tmp_path: Path) -> None:
    path = _zip(tmp_path / "a.zip", 500)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 5, 5)
    path.write_bytes(bytes(data))
    assert count_entries(path, stop_after=10) == 11


def test_an_end_record_declaring_fewer_entries_than_the_directory_holds_does_not_fool_it(
    tmp_path: Path,
) -> None:
    path = _zip(tmp_path / "liar.zip", 50)
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 1, 1)  # "one entry"
    path.write_bytes(bytes(data))
    assert len(zipfile.ZipFile(path).infolist()) == 50  # zipfile walks by size, not count
    with pytest.raises(InvalidInput, match="more than 10 files"):
        extract_zip(path, tmp_path / "out", ExtractLimits(max_files=10))


def test_a_zip_of_many_tiny_entries_is_refused_before_zipfile_builds_them(tmp_path: Path) -> None:
    path = _zip(tmp_path / "many.zip", 30_000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="more than 100 files"):
            extract_zip(path, tmp_path / "out", ExtractLimits(max_files=100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # zipfile alone would hold ~30,000 ZipInfo objects


@pytest.mark.parametrize(
    "content", [b"", b"not a zip", b"PK\x05\x06", b"not a zip, but long enough to be one"]
)
def test_what_is_not_a_zip_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.zip"
    path.write_bytes(content)
    with pytest.raises(InvalidInput, match="not a valid zip archive"):
        count_entries(path, stop_after=10)
