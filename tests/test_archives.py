"""The safe extractor: good archives of every kind come out right, and every malicious entry is
refused without anything being written outside the destination."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest

from sti.archive_kinds import archive_kind
from sti.errors import InvalidInput
from sti_worker.engine.archives import ExtractLimits, extract_tar_stream, extract_zip

TarMember = tuple[tarfile.TarInfo, bytes | None]
ZipMember = tuple[zipfile.ZipInfo, bytes]

SMALL = ExtractLimits(max_total_bytes=1000, max_files=10)
MTIME = 1_600_000_000


class OnlyRead:
    """A non-seekable stream handing out short reads, like a pipe or an HTTP body."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buffer.read(777 if size < 0 else min(size, 777))


class FailingStream:
    def read(self, size: int = -1) -> bytes:
        raise ConnectionResetError("connection reset by peer")


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    path = tmp_path / "dest"
    path.mkdir()
    return path


def assert_nothing_outside(dest: Path) -> None:
    around = dest.parent
    assert sorted(p.name for p in around.iterdir() if p.name != "in.zip") == ["dest", "outside"]
    assert list((around / "outside").iterdir()) == []


# building archives


def file_member(name: str, data: bytes = b"data", mode: int = 0o644) -> TarMember:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME
    return info, data


def dir_member(name: str, mode: int = 0o755) -> TarMember:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info, None


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> TarMember:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def special_member(name: str, kind: bytes) -> TarMember:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def tar_bytes(
    members: Iterable[TarMember], kind: str = "tar", tar_format: int = tarfile.PAX_FORMAT
) -> bytes:
    compression = {"tar": "", "tar.gz": "gz", "tar.bz2": "bz2", "tar.xz": "xz"}[kind]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}", format=tar_format) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def extract_tar(
    members: Iterable[TarMember],
    dest: Path,
    limits: ExtractLimits = SMALL,
    kind: str = "tar",
    tar_format: int = tarfile.PAX_FORMAT,
) -> int:
    data = tar_bytes(members, kind, tar_format)
    return extract_tar_stream(OnlyRead(data), dest, kind, limits)  # type: ignore[arg-type]


def zip_member(name: str, data: bytes = b"data", mode: int | None = 0o100644) -> ZipMember:
    info = zipfile.ZipInfo(name, date_time=(2020, 9, 13, 12, 26, 40))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 0 if mode is None else 3  # None: made on Windows, no Unix mode
    info.external_attr = 0 if mode is None else mode << 16
    return info, data


def write_zip(path: Path, members: Iterable[ZipMember]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are written on purpose
        with zipfile.ZipFile(path, "w") as archive:
            for info, data in members:
                archive.writestr(info, data)
    return path


def extract_zip_of(members: Iterable[ZipMember], dest: Path, limits: ExtractLimits = SMALL) -> int:
    return extract_zip(write_zip(dest.parent / "in.zip", members), dest, limits)


def refused(message: str) -> pytest.RaisesContext[InvalidInput]:
    return pytest.raises(InvalidInput, match=message)


# good archives


def test_a_good_tar_gz_comes_out_with_its_tree_modes_and_links(dest: Path) -> None:
    members = [
        dir_member("."),
        dir_member("app", mode=0o777),
        file_member("app/lib/util.py", b"print('hi')\n"),
        file_member("./app/run.sh", b"#!/bin/sh\n", mode=0o755),
        file_member("app/setuid", b"x", mode=0o6777),
        dir_member("app/locked", mode=0o1000),
        link_member("app/util.py", "lib/util.py"),
        link_member("app/lib/up", "../run.sh"),
    ]
    count = extract_tar(members, dest, ExtractLimits(), "tar.gz")

    app = dest / "app"
    assert count == len(members)
    assert (app / "lib/util.py").read_bytes() == b"print('hi')\n"
    assert stat.S_IMODE((app / "run.sh").stat().st_mode) == 0o755
    assert (app / "run.sh").stat().st_mtime == MTIME
    assert stat.S_IMODE((app / "setuid").stat().st_mode) == 0o755
    assert stat.S_IMODE(app.stat().st_mode) == 0o755
    assert stat.S_IMODE((app / "locked").stat().st_mode) == 0o700
    assert os.readlink(app / "util.py") == "lib/util.py"
    assert (app / "util.py").read_bytes() == b"print('hi')\n"
    assert (app / "lib/up").read_bytes() == b"#!/bin/sh\n"
    assert_nothing_outside(dest)


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "tar.bz2", "tar.xz"])
@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "pipe"])
def test_every_tar_kind_extracts_from_any_stream(dest: Path, kind: str, seekable: bool) -> None:
    data = tar_bytes([file_member("a/b.txt", b"hello" * 1000), link_member("c", "a/b.txt")], kind)
    stream = io.BytesIO(data) if seekable else OnlyRead(data)
    assert extract_tar_stream(stream, dest, kind, ExtractLimits()) == 2  # type: ignore[arg-type]
    assert (dest / "c").read_bytes() == b"hello" * 1000


def test_a_large_file_streams_through_in_chunks(dest: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    extract_tar([file_member("big.bin", data)], dest, ExtractLimits(), "tar.gz")
    assert (dest / "big.bin").read_bytes() == data


def test_a_good_zip_comes_out_with_its_tree_modes_and_links(dest: Path) -> None:
    members = [
        zip_member("pkg/", b"", mode=stat.S_IFDIR | 0o775),
        zip_member("pkg/run.sh", b"#!/bin/sh\n", mode=stat.S_IFREG | 0o4755),
        zip_member("pkg/deep/data.txt", b"x" * 500, mode=None),
        zip_member("./pkg/link", b"run.sh", mode=stat.S_IFLNK | 0o777),
    ]
    assert extract_zip_of(members, dest) == 4

    pkg = dest / "pkg"
    assert stat.S_IMODE(pkg.stat().st_mode) == 0o755
    assert stat.S_IMODE((pkg / "run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((pkg / "deep/data.txt").stat().st_mode) == 0o644
    assert (pkg / "deep/data.txt").read_bytes() == b"x" * 500
    assert os.readlink(pkg / "link") == "run.sh"
    assert (pkg / "link").read_bytes() == b"#!/bin/sh\n"


def test_directories_may_appear_again(dest: Path) -> None:
    members = [dir_member("a"), file_member("a/f"), dir_member("a/"), dir_member("./a")]
    assert extract_tar(members, dest) == 4
    assert (dest / "a/f").read_bytes() == b"data"


# refused names


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/x", "'/x' has an absolute path"),
        ("../x", "'../x' points outside the source root"),
        ("a/../../x", "'a/../../x' points outside the source root"),
        ("a/../b", "points outside the source root"),
        ("./..", "points outside the source root"),
        (".", "names the source root itself"),
        ("a/" + "n" * 256, "name longer than 255 bytes"),
        ("d/" * 1100 + "f", "over 256 directories deep"),  # 2.2 KB: within PATH_MAX
        ("./" * 3 + "d/" * 257 + "f", "over 256 directories deep"),
    ],
)
def test_tar_entries_outside_the_root_are_refused(dest: Path, name: str, message: str) -> None:
    with refused(message):
        extract_tar([file_member(name)], dest)
    assert_nothing_outside(dest)


def test_an_entry_256_directories_deep_is_fine(dest: Path) -> None:
    limits = ExtractLimits(max_files=1000)
    assert extract_tar([file_member("d/" * 255 + "f")], dest, limits) == 1
    assert (dest / ("d/" * 255 + "f")).read_bytes() == b"data"


def test_nul_bytes_in_names_are_refused(dest: Path) -> None:
    info, data = file_member("plain")
    info.pax_headers = {"path": "a\x00../../x"}
    with refused("NUL byte"):
        extract_tar([(info, data)], dest)
    assert_nothing_outside(dest)


def test_empty_names_are_refused(dest: Path) -> None:
    with refused("empty name"):
        extract_tar([file_member("")], dest, tar_format=tarfile.GNU_FORMAT)


# links


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([link_member("l", "/etc/passwd")], "'l' is a link to the absolute path '/etc/passwd'"),
        ([link_member("l", "../outside")], "'l' is a link to '../outside', which points outside"),
        ([link_member("a/b/l", "../../../outside")], "points outside the source root"),
        ([link_member("escape", ".."), file_member("escape/x")], "points outside"),
        ([link_member("l", "a/../../x")], "'..' may only start a link target"),
        ([link_member("l", "")], "without a valid target"),
    ],
)
def test_links_out_of_the_root_are_refused(
    dest: Path, members: list[TarMember], message: str
) -> None:
    with refused(message):
        extract_tar(members, dest)
    assert_nothing_outside(dest)
    assert not (dest.parent / "x").exists()


@pytest.mark.parametrize(
    "following", [file_member("link/x"), file_member("link"), dir_member("link")]
)
def test_nothing_is_written_through_a_link(dest: Path, following: TarMember) -> None:
    with refused("'link.*' would write through a link"):
        extract_tar([dir_member("sub"), link_member("link", "sub"), following], dest)
    assert os.readlink(dest / "link") == "sub"
    assert list((dest / "sub").iterdir()) == []
    assert_nothing_outside(dest)


def test_links_chained_to_climb_out_are_refused(dest: Path) -> None:
    # "d/up" -> ".." is the root, fine; "d/e" -> "up/.." would reach the root's parent
    members = [
        dir_member("d"),
        link_member("d/up", ".."),
        link_member("d/e", "up/.."),
        file_member("d/e/x"),
    ]
    with refused("'d/e' is a link to 'up/..': '..' may only start"):
        extract_tar(members, dest)
    assert_nothing_outside(dest)


def test_a_link_appearing_twice_is_refused(dest: Path) -> None:
    with refused("'l' appears twice"):
        extract_tar([link_member("l", "a"), link_member("l", "b")], dest)


# other entry types


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (
            link_member("hard", "missing", tarfile.LNKTYPE),
            "'hard' is a hard link to 'missing', which is not a file of the archive before it",
        ),
        (special_member("tty", tarfile.CHRTYPE), "'tty' is a device: devices are not allowed"),
        (special_member("disk", tarfile.BLKTYPE), "'disk' is a device: devices are not allowed"),
        (special_member("pipe", tarfile.FIFOTYPE), "'pipe' is a fifo: fifos are not allowed"),
        (special_member("vol", tarfile.GNUTYPE_SPARSE), "'vol' is a sparse file"),
        (special_member("odd", b"Z"), "'odd' has an unsupported type"),
    ],
)
def test_special_entries_are_refused(dest: Path, member: TarMember, message: str) -> None:
    with refused(message):
        extract_tar([file_member("target"), member], dest)
    assert not (dest / member[0].name).exists()
    assert_nothing_outside(dest)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([file_member("f"), file_member("f")], "'f' appears twice"),
        ([file_member("f"), dir_member("f")], "'f' appears twice"),
        ([dir_member("d"), file_member("d")], "'d' appears twice"),
        ([file_member("f"), file_member("f/g")], "'f/g' is below 'f', not a directory"),
    ],
)
def test_entries_in_each_others_way_are_refused(
    dest: Path, members: list[TarMember], message: str
) -> None:
    with refused(message):
        extract_tar(members, dest)
    assert (dest / members[0][0].name).exists()


# limits


def test_too_many_entries_are_refused(dest: Path) -> None:
    with refused(r"more than 3 files, directories and links \(STI_SOURCE_MAX_FILES\)"):
        extract_tar([file_member(f"f{n}") for n in range(5)], dest, ExtractLimits(max_files=3))
    assert len(list(dest.iterdir())) == 3


def test_directories_an_entry_needs_count_as_files(dest: Path) -> None:
    with refused(r"\(STI_SOURCE_MAX_FILES\)"):
        extract_tar([file_member("a/b/c/d/e/f")], dest, ExtractLimits(max_files=3))


def test_a_file_over_the_total_is_refused_before_it_is_written(dest: Path) -> None:
    members = [file_member("small", b"x" * 600), file_member("big", b"x" * 600)]
    with refused(r"'big' takes the extracted source over 1000 bytes \(STI_SOURCE_MAX_BYTES\)"):
        extract_tar(members, dest, kind="tar.gz")
    assert (dest / "small").stat().st_size == 600
    assert not (dest / "big").exists()


def test_the_per_file_limit_applies(dest: Path) -> None:
    limits = ExtractLimits(max_file_bytes=100)
    extract_tar([file_member("ok", b"x" * 100)], dest, limits)
    with refused(r"'big' is larger than 100 bytes, the limit for one file"):
        extract_tar([file_member("big", b"x" * 101)], dest, limits)


def test_global_headers_are_accepted(dest: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", pax_headers={"comment": "commit abc"}) as tar:
        info, data = file_member("f")
        tar.addfile(info, io.BytesIO(data))
    extract_tar_stream(OnlyRead(buffer.getvalue()), dest, "tar", SMALL)  # type: ignore[arg-type]
    assert (dest / "f").read_bytes() == b"data"


def test_endless_extended_headers_are_refused(dest: Path) -> None:
    record = b"16 comment=abcd\n"
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = len(record)
    members = [(header, record)] * 20 + [file_member("f")]
    with refused("more than 8 extended headers in a row"):
        extract_tar(members, dest, tar_format=tarfile.USTAR_FORMAT)


def test_oversized_tar_headers_are_refused(dest: Path) -> None:
    info, data = file_member("f")
    info.pax_headers = {"comment": "x" * (2 * 1024 * 1024)}
    with refused("extended header of .* bytes"):
        extract_tar([(info, data)], dest)


# corrupt archives and broken streams


def test_a_truncated_tar_gz_is_refused(dest: Path) -> None:
    data = tar_bytes([file_member("random", os.urandom(200_000))], "tar.gz")
    with refused("the source is not a valid tar.gz archive: "):
        extract_tar_stream(OnlyRead(data[: len(data) // 2]), dest, "tar.gz", ExtractLimits())  # type: ignore[arg-type]


def test_a_tar_gz_with_a_bad_checksum_is_refused(dest: Path) -> None:
    data = bytearray(tar_bytes([file_member("f", b"hello")], "tar.gz"))
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32
    with refused("not a valid tar.gz archive: CRC check failed"):
        extract_tar_stream(OnlyRead(bytes(data)), dest, "tar.gz", ExtractLimits())  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["tar", "tar.gz", "tar.bz2", "tar.xz"])
def test_garbage_is_refused(dest: Path, kind: str) -> None:
    with refused(f"not a valid {kind} archive"):
        extract_tar_stream(io.BytesIO(b"not an archive" * 100), dest, kind, ExtractLimits())


def test_a_tar_cut_in_a_header_is_refused(dest: Path) -> None:
    data = tar_bytes([file_member("a"), file_member("b")], tar_format=tarfile.USTAR_FORMAT)
    with refused("not a valid tar archive"):
        extract_tar_stream(io.BytesIO(data[: 512 + 512 + 300]), dest, "tar", ExtractLimits())


def test_errors_of_the_stream_itself_pass_through(dest: Path) -> None:
    with pytest.raises(ConnectionResetError):
        extract_tar_stream(FailingStream(), dest, "tar.gz", ExtractLimits())  # type: ignore[arg-type]


# zip


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/x", "'/x' has an absolute path"),
        ("C:\\x", "has an absolute path"),
        ("c:x", "has an absolute path"),
        ("\\x", "has an absolute path"),
        ("a\\..\\..\\x", "has a backslash in its name"),
        ("../x", "'../x' points outside the source root"),
        ("a/../../x", "points outside the source root"),
    ],
)
def test_zip_entries_outside_the_root_are_refused(dest: Path, name: str, message: str) -> None:
    with refused(message):
        extract_zip_of([zip_member(name)], dest)
    assert list(dest.iterdir()) == []
    assert_nothing_outside(dest)


def test_zip_names_with_nul_bytes_are_refused(dest: Path) -> None:
    # zipfile cuts names at a NUL when writing, so the NUL is patched in afterwards
    archive = write_zip(dest.parent / "in.zip", [zip_member("a#../../x")])
    archive.write_bytes(archive.read_bytes().replace(b"#", b"\x00"))
    with refused("has a NUL byte in its name"):
        extract_zip(archive, dest, SMALL)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize(
    ("target", "message"),
    [("/etc/passwd", "absolute path"), ("../outside", "points outside the source root")],
)
def test_zip_links_out_of_the_root_are_refused(dest: Path, target: str, message: str) -> None:
    members = [zip_member("l", target.encode(), mode=stat.S_IFLNK | 0o777)]
    with refused(message):
        extract_zip_of(members, dest)
    assert list(dest.iterdir()) == []
    assert_nothing_outside(dest)


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (stat.S_IFIFO | 0o644, "'p' is a fifo"),
        (stat.S_IFCHR | 0o644, "'p' is a device"),
        (stat.S_IFSOCK | 0o644, "'p' is a socket"),
    ],
)
def test_zip_special_entries_are_refused(dest: Path, mode: int, message: str) -> None:
    with refused(message):
        extract_zip_of([zip_member("p", mode=mode)], dest)


def test_a_zip_file_appearing_twice_is_refused(dest: Path) -> None:
    with refused("'f' appears twice"):
        extract_zip_of([zip_member("f", b"first"), zip_member("f", b"second")], dest)
    assert (dest / "f").read_bytes() == b"first"


def test_a_zip_bomb_is_refused_by_its_declared_size(dest: Path) -> None:
    members = [zip_member("zeros", bytes(10 * 1024 * 1024))]
    with refused(r"would extract to 10485760 bytes, more than 1000 \(STI_SOURCE_MAX_BYTES\)"):
        extract_zip_of(members, dest)
    assert list(dest.iterdir()) == []


def test_a_zip_entry_lying_about_its_size_is_refused(dest: Path) -> None:
    archive = write_zip(dest.parent / "in.zip", [zip_member("zeros", bytes(1024 * 1024))])
    _set_declared_size(archive, 10)
    with refused("not a valid zip archive: Bad CRC-32"):
        extract_zip(archive, dest, SMALL)
    assert (dest / "zeros").stat().st_size <= 10


def test_too_many_zip_entries_are_refused_up_front(dest: Path) -> None:
    with refused(r"\(STI_SOURCE_MAX_FILES\)"):
        extract_zip_of([zip_member(f"f{n}") for n in range(11)], dest)
    assert list(dest.iterdir()) == []


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_zip_is_refused(dest: Path, cut: float) -> None:
    archive = write_zip(dest.parent / "in.zip", [zip_member("f", os.urandom(5000))])
    data = archive.read_bytes()
    archive.write_bytes(data[: int(len(data) * cut)])
    with refused("the source is not a valid zip archive: "):
        extract_zip(archive, dest, SMALL)


def _set_declared_size(archive: Path, size: int) -> None:
    """Make the local and central headers of a one-entry zip claim another uncompressed size."""
    data = bytearray(archive.read_bytes())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    data[local + 22 : local + 26] = size.to_bytes(4, "little")
    data[central + 24 : central + 28] = size.to_bytes(4, "little")
    archive.write_bytes(bytes(data))


# kinds


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("app.tar", "tar"),
        ("app.tar.gz", "tar.gz"),
        ("APP.TGZ", "tar.gz"),
        ("app.tar.bz2", "tar.bz2"),
        ("app.tbz2", "tar.bz2"),
        ("app.tbz", "tar.bz2"),
        ("app.tar.xz", "tar.xz"),
        ("app.txz", "tar.xz"),
        ("app.Zip", "zip"),
        ("https://example.com/releases/v1.0/app.tar.gz?token=abc&x=1", "tar.gz"),
        ("https://example.com/app.zip#readme", "zip"),
        ("https://example.com/download?file=app.zip", None),
        ("https://example.com/app.tar.gz/", None),
        ("app.gz", None),
        ("app.jar", None),
        ("Makefile", None),
        ("", None),
    ],
)
def test_archive_kind(name: str, kind: str | None) -> None:
    assert archive_kind(name) == kind
