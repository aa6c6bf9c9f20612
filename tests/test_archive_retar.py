"""Re-tarring an untrusted archive into a build context: the safe extractor's checks with nothing
written to disk, the source root and --context-dir selected on the way."""

from __future__ import annotations

import io
import tarfile

import pytest

from sti_worker.engine.archives import ExtractLimits, retar_tar_stream
from tests.test_archives import (
    SMALL,
    OnlyRead,
    TarMember,
    dir_member,
    file_member,
    link_member,
    refused,
    special_member,
    tar_bytes,
)


def retar(
    members: list[TarMember],
    limits: ExtractLimits = SMALL,
    kind: str = "tar",
    **options: object,
) -> dict[str, tarfile.TarInfo | bytes]:
    """Re-tar members; return the output's members by name (file contents as bytes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        retar_tar_stream(OnlyRead(tar_bytes(members, kind)), kind, limits, tar, **options)  # type: ignore[arg-type]
    out.seek(0)
    found: dict[str, tarfile.TarInfo | bytes] = {}
    with tarfile.open(fileobj=out, mode="r|") as tar:
        for member in tar:
            extracted = tar.extractfile(member) if member.isreg() else None
            found[member.name] = extracted.read() if extracted else member
    return found


def test_a_good_archive_comes_out_under_src_with_its_tree_and_links() -> None:
    members = [
        dir_member("app"),
        file_member("app/main.py", b"print(1)", 0o755),
        link_member("app/current", "main.py"),
        file_member("README", b"hi"),
    ]
    found = retar(members, kind="tar.gz")
    assert found["src/app/main.py"] == b"print(1)"
    assert found["src/README"] == b"hi"
    link = found["src/app/current"]
    assert isinstance(link, tarfile.TarInfo) and link.issym() and link.linkname == "main.py"
    assert isinstance(found["src"], tarfile.TarInfo) and found["src"].isdir()


def test_the_packed_root_and_context_dir_are_selected() -> None:
    members = [
        dir_member("src"),
        file_member("src/top", b"t"),
        dir_member("src/web"),
        file_member("src/web/index.html", b"page"),
    ]
    found = retar(members, root="src", context_dir="web")
    assert set(found) == {"src", "src/index.html"}


@pytest.mark.parametrize(
    ("members", "options", "message"),
    [
        ([link_member("src", "/etc")], {"root": "src"}, "source root 'src' is a link"),
        (
            [dir_member("src"), link_member("src/web", "/etc")],
            {"root": "src", "context_dir": "web"},
            "--context-dir 'src/web' is a link",
        ),
        (
            [dir_member("src"), link_member("src/web", "."), file_member("src/web/x")],
            {"root": "src", "context_dir": "web"},
            "--context-dir 'src/web' is a link",
        ),
        ([file_member("other")], {"root": "src"}, "has no directory 'src'"),
        ([file_member("a/b")], {"context_dir": "web"}, "--context-dir 'web' is not a directory"),
    ],
    ids=["root-link", "context-dir-link", "context-dir-link-below", "no-root", "no-context-dir"],
)
def test_a_root_or_context_dir_that_is_not_a_directory_is_refused(
    members: list[TarMember], options: dict[str, str], message: str
) -> None:
    with refused(message):
        retar(members, links_anywhere=True, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([file_member("/x")], "has an absolute path"),
        ([file_member("a/../../x")], "points outside the source root"),
        ([link_member("l", "/etc/passwd")], "is a link to the absolute path"),
        ([link_member("escape", ".."), file_member("escape/x")], "points outside"),
        ([link_member("l", "a/../../x")], "'..' may only start a link target"),
        ([dir_member("sub"), link_member("link", "sub"), file_member("link/x")], "through a link"),
        ([dir_member("sub"), link_member("link", "sub"), file_member("link")], "through a link"),
        ([link_member("l", "a"), link_member("l", "b")], "'l' appears twice"),
        ([file_member("f"), file_member("f")], "'f' appears twice"),
        ([file_member("f"), dir_member("f")], "'f' appears twice"),
        ([file_member("f"), file_member("f/g")], "'f/g' is below 'f', not a directory"),
        ([link_member("hard", "f", tarfile.LNKTYPE)], "'hard' is a hard link to 'f', which is not"),
        ([special_member("tty", tarfile.CHRTYPE)], "devices are not allowed"),
        ([special_member("pipe", tarfile.FIFOTYPE)], "fifos are not allowed"),
        ([file_member(f"f{n}") for n in range(11)], r"more than 10 files.*STI_SOURCE_MAX_FILES"),
        ([file_member("a/b/c/d/e/f/g/h/i/j/k")], r"STI_SOURCE_MAX_FILES"),
        ([file_member("big", b"x" * 1001)], r"over 1000 bytes \(STI_SOURCE_MAX_BYTES\)"),
    ],
)
def test_hostile_entries_are_refused_as_on_disk(members: list[TarMember], message: str) -> None:
    with refused(message):
        retar(members)


def test_a_deep_path_goes_through_and_a_deeper_one_is_refused() -> None:
    # each entry walks up only to the nearest directory already seen, without recursion
    deep = "/".join(["d"] * 255)
    members = [file_member(f"{deep}/f{n}") for n in range(200)]
    found = retar(members, ExtractLimits(max_files=100_000))
    assert f"src/{deep}/f199" in found
    with refused("over 256 directories deep"):
        retar([file_member("/".join(["d"] * 2000) + "/f")], ExtractLimits(max_files=100_000))


def test_global_and_garbage_headers_behave_as_on_disk() -> None:
    with refused("not a valid tar.gz archive"):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w|") as tar:
            retar_tar_stream(io.BytesIO(b"garbage" * 100), "tar.gz", SMALL, tar)
