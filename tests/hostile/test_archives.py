"""Archives as an attacker writes them: crafted zip end records, hard links, tar headers whose
numbers are not numbers. Every archive is made here, byte by byte where tools would not write
it; nothing needs the network."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import shutil
import struct
import tarfile
import tracemalloc
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sti.errors import InvalidInput
from sti.model import BuildRequest
from sti.tarstreams import TarPart, retargeted, stream_tar
from sti.upload_refs import PACKED_DIR_PREFIX
from sti_submit.client import StiClient
from sti_submit.upload import pack_directory
from sti_worker.engine.archives import (
    ExtractLimits,
    extract_tar_stream,
    extract_zip,
    retar_tar_stream,
)
from sti_worker.engine.inflate import inflated
from sti_worker.engine.zip_directory import count_entries
from tests.dockertools import TRACKER, Entry, read_tree
from tests.services import Worker

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


# tar: built in memory, read by both destinations (a directory on disk, a re-tarred stream)

Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"data", **pax: str) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_600_000_000
    info.pax_headers = pax
    return info, data


def _dir(name: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _link(name: str, target: str, kind: bytes = tarfile.LNKTYPE) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def _tar(members: list[Member], *, global_pax: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers=global_pax
    ) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _extracted(data: bytes, dest: Path, limits: ExtractLimits = LIMITS, **options: Any) -> Path:
    extract_tar_stream(io.BytesIO(data), dest, "tar", limits, **options)
    return dest


def _retarred(
    data: bytes, limits: ExtractLimits = LIMITS, kind: str = "tar", **options: Any
) -> dict[str, Any]:
    """The re-tarred stream's members by name: file contents, or the TarInfo of the rest."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        retar_tar_stream(io.BytesIO(data), kind, limits, tar, **options)
    out.seek(0)
    found: dict[str, Any] = {}
    with tarfile.open(fileobj=out) as tar:
        for member in tar:
            content = tar.extractfile(member) if member.isreg() else None
            found[member.name] = content.read() if content else member
    return found


Destination = Callable[[bytes, Path], object]
DESTINATIONS: dict[str, Destination] = {
    "on disk": lambda data, dest: _extracted(data, dest),
    "re-tarred": lambda data, dest: _retarred(data),
}


@pytest.fixture(params=list(DESTINATIONS))
def read(request: pytest.FixtureRequest, dest: Path) -> Callable[[bytes], object]:
    destination = DESTINATIONS[request.param]
    return lambda data: destination(data, dest)


# hard links: to a regular file that came before, inside the archive, and nothing else


def test_hard_links_to_earlier_files_come_out_as_one_file(dest: Path) -> None:
    data = _tar(
        [
            _dir("app"),
            _file("app/a.txt", b"shared"),
            _link("app/b.txt", "app/a.txt"),
            _link("copy/c.txt", "./app//a.txt"),  # normalised as any name is
            _link("copy/d.txt", "copy/c.txt"),  # a chain: c is the same file
        ]
    )
    _extracted(data, dest)
    inode = (dest / "app" / "a.txt").stat().st_ino
    for name in ("app/b.txt", "copy/c.txt", "copy/d.txt"):
        assert (dest / name).read_bytes() == b"shared"
        assert (dest / name).stat().st_ino == inode
    found = _retarred(data, root="app")
    assert found["src/a.txt"] == b"shared"
    assert found["src/b.txt"].islnk() and found["src/b.txt"].linkname == "src/a.txt"


def test_a_hard_link_takes_its_context_dir_with_it() -> None:
    data = _tar([_file("app/sub/a", b"x"), _link("app/sub/b", "app/sub/a")])
    found = _retarred(data, context_dir="app/sub")
    assert found["src/a"] == b"x"
    assert found["src/b"].linkname == "src/a"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_file("a"), _link("h", "../a")], "to '../a', which is not a path in the archive"),
        ([_file("a"), _link("h", "a/../a")], "which is not a path in the archive"),
        ([_link("h", "/etc/passwd")], "to '/etc/passwd', which is not a path in the archive"),
        ([_link("h", "")], "which is not a path in the archive"),
        ([_file("a"), _link("s", "a", tarfile.SYMTYPE), _link("h", "s")], "which is a link"),
        ([_dir("d"), _link("h", "d")], "to 'd', which is a directory"),
        ([_file("a"), _link("h", ".")], "to '.', which is a directory"),  # the root
        ([_file("d/a"), _link("h", "d")], "to 'd', which is a directory"),  # implied
        ([_link("h", "a"), _file("a")], "to 'a', which is not a file of the archive before it"),
        ([_link("h", "h")], "to 'h', which is not a file of the archive before it"),
        ([_link("h", "nowhere")], "which is not a file of the archive before it"),
        ([_file("d/a"), _link("s", "d", tarfile.SYMTYPE), _link("h", "s/a")], "not a file of"),
        ([_file("a"), _file("h"), _link("h", "a")], "'h' appears twice"),
        ([_file("a"), _link("h", "a"), _link("h", "a")], "'h' appears twice"),
        ([_file("a"), _link("s", "d", tarfile.SYMTYPE), _link("s/h", "a")], "through a link"),
    ],
    ids=[
        "parent",
        "dotdot inside",
        "absolute",
        "empty",
        "to a symlink",
        "to a directory",
        "to the root",
        "to an implied directory",
        "to a later entry",
        "to itself",
        "to nothing",
        "through a symlinked directory",
        "over a file",
        "twice",
        "under a symlink",
    ],
)
def test_a_hard_link_to_anything_but_an_earlier_file_is_refused(
    read: Callable[[bytes], object], members: list[Member], message: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        read(_tar(members))


def test_a_hard_link_through_a_link_out_of_the_tree_reaches_nothing(tmp_path: Path) -> None:
    """A packed directory keeps links whatever their target: one to /etc, then a hard link
    named through it, would be a second name for a file of the host."""
    secret = tmp_path / "secret"
    secret.write_text("host file")
    members = [_link("out", str(tmp_path), tarfile.SYMTYPE), _link("h", "out/secret")]
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(InvalidInput, match="not a file of the archive before it"):
        _extracted(_tar(members), dest, links_anywhere=True)
    assert not (dest / "h").exists() and secret.stat().st_nlink == 1
    with pytest.raises(InvalidInput, match="not a file of the archive before it"):
        _retarred(_tar(members), links_anywhere=True)


def test_a_hard_link_out_of_the_context_dir_is_refused_when_re_tarred() -> None:
    """The file it names was left behind; on disk, the whole archive is there first."""
    data = _tar([_file("lib/a", b"x"), _link("app/b", "lib/a")])
    with pytest.raises(
        InvalidInput,
        match="'lib/a', which is outside 'app', the part of the archive the build takes",
    ):
        _retarred(data, context_dir="app")


def test_hard_links_on_disk_count_as_the_copies_a_build_makes(dest: Path) -> None:
    data = _tar([_file("a", b"x" * 600), _link("b", "a")])
    with pytest.raises(InvalidInput, match="'b' takes the extracted source over 1000 bytes"):
        _extracted(data, dest, ExtractLimits(max_total_bytes=1000, max_files=10))


def test_hard_links_count_as_entries(read: Callable[[bytes], object]) -> None:
    data = _tar([_file("a")] + [_link(f"h{n}", "a") for n in range(100)])
    with pytest.raises(InvalidInput, match="more than 100 files"):
        read(data)


# numbers in tar headers: what is not a number, or not one a time can be, is refused


BAD_PAX_NUMBERS = [
    ("mtime", "nan"),
    ("mtime", "NaN"),
    ("mtime", "inf"),
    ("mtime", "-inf"),
    ("mtime", "1e999"),
    ("mtime", "1e400"),
    ("mtime", "-1e300"),
    ("mtime", "9" * 400),
    ("mtime", "99999999999"),  # past what 64-bit nanoseconds hold
    ("mtime", "abc"),
    ("mtime", ""),
    ("mtime", " 1"),
    ("mtime", "1_0"),
    ("mtime", "\u0661\u0662"),  # Arabic-Indic digits: int() and float() take them
    ("mtime", "0x10"),
    ("atime", "nan"),
    ("ctime", "inf"),
    ("size", "abc"),
    ("size", "-1"),
    ("size", "1e3"),
    ("size", "+4"),
    ("size", "4.0"),
    ("size", "9" * 5000),  # int() refuses it, and tarfile reads that as 0
    ("size", "99999999999999999999"),
    ("uid", "abc"),
    ("uid", "-1"),
    ("gid", "nan"),
]


@pytest.mark.parametrize(("field", "value"), BAD_PAX_NUMBERS, ids=lambda v: str(v)[:12])
def test_a_pax_number_that_is_not_one_is_refused_naming_the_entry(
    read: Callable[[bytes], object], field: str, value: str
) -> None:
    data = _tar([_dir("app"), _file("app/a.txt", b"data", **{field: value})])
    with pytest.raises(InvalidInput, match=f"entry 'app/a.txt' has an invalid {field}"):
        read(data)


@pytest.mark.parametrize(("field", "value"), [("mtime", "nan"), ("uid", "x"), ("size", "4")])
def test_a_global_header_is_checked_as_an_entry_own(
    read: Callable[[bytes], object], field: str, value: str
) -> None:
    """tarfile applies a global header to every entry after it: size would be read from it for
    the content while the next header is found by the entry's own size field."""
    with pytest.raises(InvalidInput, match=f"invalid {field}|global header setting the size"):
        read(_tar([_file("a.txt")], global_pax={field: value}))


@pytest.mark.parametrize(
    ("field", "value", "mtime"),
    [
        ("mtime", "1700000000.123456789", 1_700_000_000),
        ("mtime", "-86400.5", -86_400),
        ("mtime", "0", 0),
        ("uid", "4294967294", 1_600_000_000),
        ("atime", "1700000000", 1_600_000_000),
    ],
)
def test_pax_numbers_as_tools_write_them_are_read(
    dest: Path, field: str, value: str, mtime: int
) -> None:
    data = _tar([_file("a.txt", b"data", **{field: value})])
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        retar_tar_stream(io.BytesIO(data), "tar", LIMITS, tar)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.getmember("src/a.txt").mtime == mtime
        assert tar.extractfile("src/a.txt").read() == b"data"  # type: ignore[union-attr]
    assert (_extracted(data, dest) / "a.txt").read_bytes() == b"data"


def test_a_ustar_time_out_of_range_is_refused(read: Callable[[bytes], object]) -> None:
    """A GNU header holds base-256 numbers of up to 95 bits."""
    info, content = _file("a.txt")
    info.mtime = 2**80
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(content or b""))
    with pytest.raises(InvalidInput, match=r"'a.txt' has an invalid mtime in its header: 12089"):
        read(out.getvalue())


def test_a_ustar_size_that_is_not_octal_is_refused(read: Callable[[bytes], object]) -> None:
    data = bytearray(_tar([_file("a.txt", b"data")]))
    header = next(at for at in range(0, len(data), 512) if data[at : at + 5] == b"a.txt")
    data[header + 124 : header + 136] = b"abc        \0"
    with pytest.raises(InvalidInput, match="not a valid tar archive"):
        read(bytes(data))


@pytest.mark.parametrize(
    "pax",
    [
        {"GNU.sparse.realsize": "2"},  # alone, it cuts the content to 2 bytes
        {"GNU.sparse.size": "4", "GNU.sparse.offset": "0", "GNU.sparse.numbytes": "4"},
        {"GNU.sparse.map": "0,4"},
        {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"},
    ],
    ids=["realsize", "0.0", "0.1", "1.0"],
)
def test_sparse_pax_entries_are_refused(
    read: Callable[[bytes], object], pax: dict[str, str]
) -> None:
    with pytest.raises(InvalidInput, match=re.escape("'a.txt' is a sparse file")):
        read(_tar([_file("a.txt", b"data", **pax)]))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("d/" + "x" * 256, "longer than 255 bytes"),
        ("/".join(["d"] * 300), "directories deep"),
        ("x" * 2 * 1024 * 1024, "extended header of"),
    ],
    ids=["long component", "deep", "huge"],
)
def test_gnu_long_names_over_the_limits_are_refused(
    read: Callable[[bytes], object], name: str, message: str
) -> None:
    info, content = _file(name)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(content or b""))
    with pytest.raises(InvalidInput, match=message):
        read(out.getvalue())


# a hard-linked tree (cp -al, a package store) builds the same with --local and through the queue


BuildBothWays = Callable[[Path, str | None], tuple[str, str]]


@pytest.fixture
def local_tag(api: docker.APIClient) -> Iterator[str]:
    tag = f"sti-test/app-{uuid.uuid4().hex[:10]}"
    yield tag
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_image(tag, force=True)


@pytest.fixture
def build_both_ways(
    images: dict[str, str], worker: Worker, client: StiClient, app_tag: str, local_tag: str
) -> BuildBothWays:
    """Build a source (and context dir) as sti-submit --local builds it and through the queue
    (uploaded by the client); the tags of the two images."""
    from sti_worker.local import build_locally  # imports the engine: only for the tests that build

    def build(source: Path, context_dir: str | None) -> tuple[str, str]:
        results = []
        for tag in (local_tag, app_tag):
            request = BuildRequest(str(source), images["sti-fake"], tag, context_dir=context_dir)
            if tag == local_tag:
                result = build_locally(request, None, lambda line: None)
            else:
                result = client.wait(client.submit_build(request), timeout=120)
            TRACKER.built(result.image_id)
            results.append(result)
        assert all(result.success for result in results), [r.messages for r in results]
        return local_tag, app_tag

    return build


def _hard_linked_tree(root: Path) -> Path:
    """release/ is a cp -al of current/, plus a second name inside release/ itself."""
    (root / "current" / "lib").mkdir(parents=True)
    (root / "current" / "index.html").write_text("<h1>hello</h1>\n")
    (root / "current" / "lib" / "app.js").write_text("console.log(1)\n")
    (root / "current" / "run.sh").write_text("#!/bin/sh\n")
    (root / "current" / "run.sh").chmod(0o755)
    shutil.copytree(root / "current", root / "release", copy_function=os.link)
    os.link(root / "release" / "lib" / "app.js", root / "release" / "app-copy.js")
    assert (root / "release" / "lib" / "app.js").stat().st_nlink == 3
    return root


@pytest.mark.parametrize("context_dir", [None, "release"])
def test_a_packed_hard_linked_tree_reaches_the_build_a_file_per_name(
    tmp_path: Path, context_dir: str | None
) -> None:
    """What the worker makes of sti-submit's upload, without Docker (the test below builds)."""
    packed = b"".join(pack_directory(_hard_linked_tree(tmp_path / "app")))
    found = _retarred(
        packed,
        root=PACKED_DIR_PREFIX,
        context_dir=context_dir,
        links_anywhere=True,
        kind="tar.zst",
    )
    prefix = "src/" if context_dir else "src/release/"
    assert found[f"{prefix}app-copy.js"] == found[f"{prefix}lib/app.js"] == b"console.log(1)\n"
    assert not [
        name
        for name, member in found.items()
        if isinstance(member, tarfile.TarInfo) and member.islnk()
    ]


@pytest.mark.parametrize("context_dir", [None, "release"])
def test_a_hard_linked_tree_builds_the_same_with_local_and_through_the_queue(
    api: docker.APIClient, build_both_ways: BuildBothWays, tmp_path: Path, context_dir: str | None
) -> None:
    """With --context-dir release, every file of it is a second name of one outside it."""
    local_tag, queue_tag = build_both_ways(_hard_linked_tree(tmp_path / "app"), context_dir)
    for placed in ("/tmp/src", "/sti-fake/src"):  # where sti put it, where prepare copied it
        assert _image_tree(api, queue_tag, placed) == _image_tree(api, local_tag, placed)
    through_queue = _image_tree(api, queue_tag, "/tmp/src")
    prefix = "" if context_dir else "release/"
    assert through_queue[f"{prefix}app-copy.js"].content == b"console.log(1)\n"
    assert through_queue[f"{prefix}run.sh"].mode & 0o111


def test_an_uploaded_tar_gz_with_hard_links_builds_as_with_local(
    api: docker.APIClient, build_both_ways: BuildBothWays, tmp_path: Path
) -> None:
    """tar writes the second name of a file as a hard link. Through the queue the archive is
    re-tarred into the build and its hard links stay links; --local extracts it first and
    copies each name: the same files, the same contents and modes."""
    archive = tmp_path / "app.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(_hard_linked_tree(tmp_path / "app"), arcname=".")
    with tarfile.open(archive) as tar:
        assert tar.getmember("./release/lib/app.js").islnk()
    local_tag, queue_tag = build_both_ways(archive, None)
    for placed in ("/tmp/src", "/sti-fake/src"):
        by_queue, by_local = (_image_files(api, tag, placed) for tag in (queue_tag, local_tag))
        assert by_queue == by_local
    assert _image_files(api, queue_tag, "/tmp/src")["release/app-copy.js"][0] == b"console.log(1)\n"


def _image_tree(api: docker.APIClient, image: str, path: str) -> dict[str, Entry]:
    container = api.create_container(image, command=["true"])["Id"]
    try:
        return read_tree(api, container, path)
    finally:
        api.remove_container(container, force=True)


def _image_files(api: docker.APIClient, image: str, path: str) -> dict[str, tuple[bytes, int]]:
    """Each file's content and mode, whether the image holds it as a file or a hard link."""
    tree = _image_tree(api, image, path)
    kept = ("file", "hardlink")
    return {name: (e.content, e.mode) for name, e in tree.items() if e.kind in kept}


# gzip: a stream of many small members


def test_many_small_gzip_members_across_blocks_inflate_whole() -> None:
    """zlib copies what follows a member's end: each member is given a small window of its
    input first, so a MiB of 20-byte members is not half a MiB copied per member (measured:
    0.33 s a MiB before, 0.04 s now). Members, and zeros between them, cross block edges."""
    contents = [bytes([n % 251]) * n for n in range(301)]
    members = [
        gzip.compress(content, mtime=0) + b"\0" * (n % 3) for n, content in enumerate(contents)
    ]
    blob = b"".join(members) * 200
    assert len(blob) > 1024 * 1024  # more than one block
    assert b"".join(inflated(io.BytesIO(blob))) == b"".join(contents) * 200
    empty = gzip.compress(b"", mtime=0) * 100_000
    assert b"".join(inflated(io.BytesIO(empty))) == b""


# what an archive costs the worker beyond the bytes of its files


def test_extended_headers_count_toward_the_byte_limit(read: Callable[[bytes], object]) -> None:
    """A PAX record (or a GNU long name) holds up to a MiB, eight in a row before each entry,
    and decompresses as content does: a 40 KB tar.xz of them was 256 MB to decode (2.8 s),
    outside STI_SOURCE_MAX_BYTES, which counted the files alone."""
    padded = [_file(f"f{n}", b"", comment="x" * 300_000) for n in range(4)]
    with pytest.raises(InvalidInput, match=r"'f3'.* over 1048576 bytes .*STI_SOURCE_MAX_BYTES"):
        read(_tar(padded))
    assert sorted(_retarred(_tar(padded[:3]))) == ["src", "src/f0", "src/f1", "src/f2"]


def _deep_names(count: int) -> bytes:
    """count empty files, each below the same 3.8 KB of directories: each path takes 3.8 KB,
    each name a few bytes."""
    prefix = "/".join(f"d{n:02d}" + "x" * 250 for n in range(15))
    return _tar([_file(f"{prefix}/f{n:06d}", b"") for n in range(count)])


def test_re_tarring_many_long_paths_costs_memory_by_names_not_paths() -> None:
    """The streamed path's model of the tree held every path whole (and the output TarFile
    every member it wrote): a 271 KB tar.xz of 99,000 such entries took 827 MB of the worker."""
    data = _deep_names(5_000)
    limits = ExtractLimits(max_total_bytes=64 * 1024 * 1024, max_files=10_000)
    part = _retar_part(data, limits)
    tracemalloc.start()
    try:
        for _ in stream_tar([part]):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak} bytes at the peak for 5,000 entries of 3.8 KB paths"


def _retar_part(data: bytes, limits: ExtractLimits) -> TarPart:
    def add(tar: tarfile.TarFile) -> None:
        retar_tar_stream(io.BytesIO(data), "tar", limits, tar)

    return add


def test_a_long_named_member_handed_on_keeps_its_new_name() -> None:
    """Docker writes a name over 100 bytes, or not ASCII, in a PAX record, which tarfile writes
    back over the member's new name: /tmp/build's long names landed under build/, not src/, and
    a hard link named the old path."""
    long = "build/" + "d" * 120 + "/café.txt"
    data = _tar([_dir("build"), _file(long, b"hi"), _link("build/hl", long)])
    out = b"".join(stream_tar([retargeted(lambda: [data], "build", "src")]))
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        found = {member.name: member for member in tar}
    renamed = "src/" + long.removeprefix("build/")
    assert sorted(found) == sorted(["src", "src/hl", renamed])
    assert found["src/hl"].linkname == renamed


def test_a_member_handed_on_takes_its_new_owner_whatever_its_old_uid() -> None:
    """A uid past 2**21 (OpenShift's ranges) is a PAX record, which tarfile wrote back over
    the owner the next container's user is given."""
    info, content = _file("build/a", b"hi")
    info.uid, info.uname = 1_000_680_000, "us\u00e9r"
    data = _tar([_dir("build"), (info, content)])
    out = b"".join(stream_tar([retargeted(lambda: [data], "build", "src")], owner=(1001, 0)))
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        owners = {member.name: (member.uid, member.gid, member.uname) for member in tar}
    assert owners == {"src": (1001, 0, ""), "src/a": (1001, 0, "")}


def test_extracting_a_deep_entry_costs_look_ups_by_what_it_adds_not_its_depth(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each entry looked up every directory above it twice and resolved its whole path: an
    18 KB tar.xz of 10,000 files 255 directories deep took 107 s to extract (a downloaded
    archive, an uploaded zip), 255 levels x 3 look-ups a file."""
    deep = "/".join(["d"] * 255)
    members = [_file(f"{deep}/f{n}", b"") for n in range(50)]
    members += [_link(f"{deep}/h{n}", f"{deep}/f{n}") for n in range(50)]
    members += [_file(f"{'/'.join(['e'] * n)}/g", b"") for n in range(1, 100)]  # new dirs each
    data = _tar(members)
    looked_up = []
    for name in ("lstat", "stat"):
        real = getattr(os, name)

        def counted(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
            looked_up.append(args[0])
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, counted)
    _extracted(data, dest, ExtractLimits(max_total_bytes=1024 * 1024, max_files=2_000))
    monkeypatch.undo()
    assert len(looked_up) <= 2 * len(members), f"{len(looked_up)} look-ups for {len(members)}"
    assert (dest / deep / "h7").read_bytes() == b"" and (dest / deep / "h7").stat().st_nlink == 2
