"""The tar writer's fast path: for the members it takes, the header is the very bytes tarfile
writes (PAX format); it leaves every other member to tarfile; a whole tree streams to the same
archive as tarfile writes from the same members, links and owners included."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from sti.tarstreams import directory, stream_tar, ustar_header


def _info(name: str, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for field, value in fields.items():
        setattr(info, field, value)
    return info


def _tarfile_header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@pytest.mark.parametrize(
    "info",
    [
        _info("src/app.py", size=12, mode=0o644, mtime=1_700_000_000),
        _info("src/bin/run", size=0, mode=0o4755, uid=1001, gid=0, uname="root", gname="root"),
        _info("src/dir", type=tarfile.DIRTYPE, mode=0o755),
        _info("src/dir/", type=tarfile.DIRTYPE, mode=0o700),
        _info("src/link", type=tarfile.SYMTYPE, linkname="../etc/x" * 12),
        _info("src/hard", type=tarfile.LNKTYPE, linkname="src/app.py"),
        _info("s" * 100, size=8**11 - 1, mtime=8**11 - 1, uid=8**7 - 1, gid=8**7 - 1),
        _info("src/empty", uname="u" * 32, gname="g" * 32),
    ],
    ids=lambda info: info.name[:24],
)
def test_a_simple_member_gets_the_header_tarfile_writes(info: tarfile.TarInfo) -> None:
    assert ustar_header(info) == _tarfile_header(info)


@pytest.mark.parametrize(
    "info",
    [
        _info("s" * 101),
        _info("src/naïve.txt"),
        _info("src/link", type=tarfile.SYMTYPE, linkname="l" * 101),
        _info("src/link", type=tarfile.SYMTYPE, linkname="ünï"),
        _info("src/big", size=8**11),
        _info("src/late", mtime=8**11),
        _info("src/early", mtime=-1),
        _info("src/fraction", mtime=1.5),
        _info("src/owner", uid=8**7),
        _info("src/owner", uname="u" * 33),
        _info("src/tagged", pax_headers={"comment": "x"}),
        _info("src/device", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        _info("src/fifo", type=tarfile.FIFOTYPE),
    ],
    ids=lambda info: info.name[:24],
)
def test_any_other_member_is_left_to_tarfile(info: tarfile.TarInfo) -> None:
    assert ustar_header(info) is None


def _tree(root: Path) -> Path:
    (root / "pkg" / "deep").mkdir(parents=True)
    (root / "pkg" / "app.py").write_bytes(os.urandom(70_000))
    (root / "pkg" / "deep" / ("long-name-" * 12)).write_text("long\n")
    (root / "naïve.txt").write_text("non-ascii\n")
    (root / "empty").mkdir()
    (root / "pkg" / "link").symlink_to("app.py")
    os.link(root / "pkg" / "app.py", root / "pkg" / "hard")
    (root / "run").write_text("#!/bin/sh\n")
    (root / "run").chmod(0o4755)
    os.utime(root / "run", (1_700_000_000.5, 1_700_000_000.5))
    return root


def _as_tarfile_writes(root: Path, owner: tuple[int, int] | None) -> bytes:
    """The members stream_tar(directory(root, "src")) adds, written by tarfile itself."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        root_info = _info("src", type=tarfile.DIRTYPE, mode=root.stat().st_mode & 0o7777)
        members = [root_info]
        for current, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in dirnames + sorted(filenames):
                path = Path(current, name)
                info = tar.gettarinfo(str(path), f"src/{path.relative_to(root).as_posix()}")
                if info.islnk():  # sti writes each name of a hard-linked file as a file
                    info.type, info.linkname, info.size = tarfile.REGTYPE, "", path.stat().st_size
                info.mtime = int(info.mtime)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                members.append(info)
        for info in members:
            if owner:
                info.uid, info.gid = owner
                info.uname = info.gname = ""
            path = root / info.name.removeprefix("src").lstrip("/")
            if info.isreg():
                with path.open("rb") as content:
                    tar.addfile(info, content)
            else:
                tar.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("owner", [None, (1001, 0)])
def test_a_tree_streams_to_the_archive_tarfile_writes(
    tmp_path: Path, owner: tuple[int, int] | None
) -> None:
    root = _tree(tmp_path / "app")
    streamed = b"".join(stream_tar([directory(root, "src")], owner=owner))
    assert streamed == _as_tarfile_writes(root, owner)
    with tarfile.open(fileobj=io.BytesIO(streamed)) as tar:
        assert tar.getmember("src/pkg/hard").isreg()
        hard, original = (tar.extractfile(f"src/pkg/{name}") for name in ("hard", "app.py"))
        assert hard and original and hard.read() == original.read()
