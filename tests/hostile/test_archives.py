"""Archives as an attacker writes them: crafted zip end records, hard links, tar headers whose
numbers are not numbers. Every archive is made here, byte by byte where tools would not write
it; nothing needs the network."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sti.errors import InvalidInput
from sti_worker.engine.archives import ExtractLimits, extract_zip
from sti_worker.engine.zip_directory import count_entries

LIMITS = ExtractLimits(max_total_bytes=1024 * 1024, max_files=100)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


# zip: the end record is found where zipfile finds it, and only there

_END = b"PK\x05\x06"


def _entries(names: list[bytes], at: int = 0) -> tuple[bytes, bytes]:
    """Local headers (empty stored files) written from byte `at`, and their central directory."""
    local, central = bytearray(), bytearray()
    for name in names:
        offset = at + len(local)
        local += struct.pack(
            "<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0x21, 0, 0, 0, len(name), 0
        )
        local += name
        central += struct.pack(
            "<4s4B4HL2L5H2L",
            b"PK\x01\x02",
            20,
            3,
            20,
            0,
            0,
            0,
            0,
            0x21,
            0,
            0,
            0,
            len(name),
            0,
            0,
            0,
            0,
            0o100644 << 16,
            offset,
        )
        central += name
    return bytes(local), bytes(central)


def _end(entries: int, size: int, offset: int, comment: bytes = b"", **fields: int) -> bytes:
    values = {"disk": 0, "disk_start": 0, "disk_entries": entries, "comment_length": len(comment)}
    values.update(fields)
    return (
        struct.pack(
            "<4s4H2LH",
            _END,
            values["disk"],
            values["disk_start"],
            values["disk_entries"],
            entries,
            size,
            offset,
            values["comment_length"],
        )
        + comment
    )


def _zip(names: list[bytes], comment: bytes = b"") -> bytes:
    local, central = _entries(names)
    return local + central + _end(len(names), len(central), len(local), comment)


def _zip64(names: list[bytes], *, locator_offset: int | None = None, **fields: int) -> bytes:
    """A zip with ZIP64 end records, as tools write one of more than 65,535 entries."""
    local, central = _entries(names)
    record_at = len(local) + len(central)
    values = {"size": 44, "entries": len(names), "plain_entries": 0xFFFF}
    values.update(fields)
    record = b"PK\x06\x06" + struct.pack(
        "<QHHIIQQQQ",
        values["size"],
        45,
        45,
        0,
        0,
        values["entries"],
        values["entries"],
        len(central),
        len(local),
    )
    at = record_at if locator_offset is None else locator_offset
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, at, 1)
    end = _end(values["plain_entries"], 0xFFFFFFFF, 0xFFFFFFFF)
    return local + central + record + locator + end


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _names(count: int) -> list[bytes]:
    return [b"f%d" % index for index in range(count)]


def test_the_crafted_end_record_of_the_issue_is_read_as_zipfile_reads_it(tmp_path: Path) -> None:
    """The end record's own offset field spells PK\\x05\\x06: the central directory really is
    at byte 0x06054b50 (the bytes before it are a hole in a sparse file), so zipfile opens the
    zip, and the old count found the signature in the offset field, 16 bytes into the record,
    too close to the end to be a record: no count, no limit, 20,000 ZipInfo objects."""
    names = _names(20_000)
    directory_at = struct.unpack("<L", _END)[0]
    local, central = _entries(names, at=directory_at - 30 * len(names) - sum(map(len, names)))
    path = tmp_path / "crafted.zip"
    with path.open("wb") as out:
        out.seek(directory_at - len(local))
        out.write(local + central + _end(len(names), len(central), directory_at))
    assert path.read_bytes()[-6:-2] == _END
    assert count_entries(path, stop_after=100) > 100
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="more than 100 files"):
            extract_zip(path, tmp_path / "out", LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # zipfile's list of 20,000 entries alone takes ~9 MiB


def test_a_good_zip_made_by_hand_is_read(tmp_path: Path, dest: Path) -> None:
    path = _write(tmp_path / "good.zip", _zip(_names(3), comment=b"a comment"))
    assert count_entries(path, stop_after=100) == 3
    assert extract_zip(path, dest, LIMITS) == 3
    assert sorted(p.name for p in dest.iterdir()) == ["f0", "f1", "f2"]


def test_a_zip64_zip_made_by_hand_is_read(tmp_path: Path, dest: Path) -> None:
    path = _write(tmp_path / "good64.zip", _zip64(_names(3)))
    assert count_entries(path, stop_after=100) == 3
    assert extract_zip(path, dest, LIMITS) == 3


def _refused(path: Path, message: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=message):
        count_entries(path, stop_after=100)
    with pytest.raises(InvalidInput, match=message):
        extract_zip(path, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _with_fake_record_in_comment(fake: bytes, after: bytes = b"") -> bytes:
    """A real zip of one entry whose comment holds another end record (zipfile takes the last
    signature it finds) declaring 5,000 entries in the bytes before it."""
    local, central = _entries([b"real"])
    many = _entries(_names(5_000))[1]
    body = local + central + many
    comment = fake + after
    return body + _end(1, len(central), len(local), comment)


def test_an_end_record_hidden_in_the_comment_is_refused(tmp_path: Path) -> None:
    local, central = _entries([b"real"])
    many_size = len(_entries(_names(5_000))[1])
    real_end_at = len(local) + len(central) + many_size
    # the fake's comment runs to the end of the file, as the real one's does
    fake = _end(5_000, many_size, len(local) + len(central), comment_length=0)
    path = _write(tmp_path / "two.zip", _with_fake_record_in_comment(fake))
    assert path.read_bytes().rfind(_END) > real_end_at
    _refused(path, "more than one end of central directory record", tmp_path)


def test_a_signature_in_the_comment_that_zipfile_would_take_is_refused(tmp_path: Path) -> None:
    fake = _END + b"\0" * 4  # too short a record to be whole, zipfile takes it all the same
    path = _write(tmp_path / "sig.zip", _with_fake_record_in_comment(fake, after=b"x" * 40))
    _refused(path, "bytes follow it", tmp_path)


def test_bytes_after_the_end_record_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "trailing.zip", _zip(_names(2)) + b"junk")
    _refused(path, "4 bytes follow it", tmp_path)


def test_two_zips_one_after_the_other_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "cat.zip", _zip(_names(2)) + _zip([b"second"]))
    _refused(path, "its end record says", tmp_path)


def test_a_directory_not_where_its_offset_says_is_refused(tmp_path: Path) -> None:
    local, central = _entries(_names(2))
    shifted = local + central + _end(2, len(central), len(local) + 7)
    _refused(_write(tmp_path / "shifted.zip", shifted), "its end record says", tmp_path)


def test_a_count_that_is_not_the_directorys_is_refused(tmp_path: Path) -> None:
    local, central = _entries(_names(3))
    for declared in (2, 4):
        data = local + central + _end(declared, len(central), len(local))
        path = _write(tmp_path / f"count{declared}.zip", data)
        _refused(path, f"declares {declared} entries, its central directory holds 3", tmp_path)


def test_a_last_entry_running_past_the_directory_is_refused(tmp_path: Path) -> None:
    """zipfile reads what there is of the last name and stops; others read into the end record."""
    local, central = _entries(_names(2))
    last = len(central) - 46 - 2
    overrun = central[: last + 28] + struct.pack("<H", 3) + central[last + 30 :]
    data = local + overrun + _end(2, len(overrun), len(local))
    assert len(zipfile.ZipFile(io.BytesIO(data)).infolist()) == 2
    _refused(_write(tmp_path / "overrun.zip", data), "runs past its end", tmp_path)


def test_a_zip_spanning_disks_is_refused(tmp_path: Path) -> None:
    local, central = _entries(_names(2))
    data = local + central + _end(2, len(central), len(local), disk_entries=1)
    _refused(_write(tmp_path / "disks.zip", data), "more than one disk", tmp_path)


@pytest.mark.parametrize(
    ("zip64", "message"),
    [
        (lambda names: _zip64(names, locator_offset=0), "locator points to byte 0"),
        (lambda names: _zip64(names, size=100), "ZIP64 end record claims 100 bytes"),
        (lambda names: _zip64(names, plain_entries=2), "disagree on the entry count"),
        (lambda names: _zip64(names, entries=1), "declares 1 entries"),
    ],
    ids=["locator elsewhere", "extensible data", "plain count", "zip64 count"],
)
def test_a_zip64_record_read_two_ways_is_refused(
    tmp_path: Path, zip64: Callable[[list[bytes]], bytes], message: str
) -> None:
    _refused(_write(tmp_path / "64.zip", zip64(_names(3))), message, tmp_path)


def test_a_zip64_locator_without_its_record_is_refused(tmp_path: Path) -> None:
    """zipfile would use the plain record; a reader following the locator, another one."""
    local, central = _entries(_names(3))
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, 0, 1)
    data = local + central + locator + _end(3, len(central), len(local))
    _refused(_write(tmp_path / "locator.zip", data), "not preceded by a ZIP64 end record", tmp_path)


def test_a_zip_zipfile_writes_with_a_comment_holding_pk_bytes_is_read(tmp_path: Path) -> None:
    path = tmp_path / "python.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a", b"a")
        archive.comment = b"PK\x01\x02 PK\x06\x07 not an end record"
    assert count_entries(path, stop_after=100) == 1
