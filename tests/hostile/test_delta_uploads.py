"""Delta uploads as an attacker writes them (anyone on Redis can store a blob and name it in a
task message): removal lists that leave the tree, name its root, git metadata, or a path
through a link or a file; deltas that do not begin with their list; entries a whole upload
would refuse; bases and deltas over the limits. Each is refused with an InvalidInput that names
the problem. The worker merges the two as one tar stream: it writes nothing anywhere."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import zstandard

from sti.blobstore import BlobStore
from sti.deltas import REMOVED_MEMBER
from sti.errors import InvalidInput
from sti.upload_refs import UploadRef
from sti_worker.engine.archives import ExtractLimits
from sti_worker.engine.sources import SourcePolicy
from tests.unit.deltas_helpers import make_tree, streamed_tree, submit


@pytest.fixture
def store(broker_url: str) -> Iterator[BlobStore]:
    client = redis.Redis.from_url(broker_url)
    yield BlobStore(client, expires_s=600, max_bytes=64 * 1024 * 1024)
    client.close()


@pytest.fixture
def base(store: BlobStore, tmp_path: Path) -> str:
    """A whole upload: app.py, run.sh, lib/, static/, a link to a file and one to a directory."""
    return submit(store, make_tree(tmp_path / "app"), None).ref.blob


def _tar(*members: tuple[str, bytes, bytes, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return zstandard.ZstdCompressor().compress(buffer.getvalue())


def _file(name: str, data: bytes = b"x\n") -> tuple[str, bytes, bytes, str]:
    return (name, data, tarfile.REGTYPE, "")


def _directory(name: str) -> tuple[str, bytes, bytes, str]:
    return (name, b"", tarfile.DIRTYPE, "")


def _removing(*paths: bytes | str) -> tuple[str, bytes, bytes, str]:
    listed = b"".join((os.fsencode(p) if isinstance(p, str) else p) + b"\0" for p in paths)
    return _file(REMOVED_MEMBER, listed)


def _delta(store: BlobStore, base: str, *members: tuple[str, bytes, bytes, str]) -> str:
    digest, _ = store.put([_tar(*members)])
    return str(UploadRef(digest, "delta", base))


def _refused(store: BlobStore, source: str, limits: ExtractLimits | None = None) -> str:
    policy = SourcePolicy(limits=limits or ExtractLimits())
    with pytest.raises(InvalidInput) as refused:
        streamed_tree(store, source, policy=policy)
    return refused.value.message


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("..", "points outside the source root"),
        ("../etc/passwd", "points outside the source root"),
        ("lib/../../x", "points outside the source root"),
        ("/etc", "an absolute path"),
        ("/", "an absolute path"),
        ("", "the source root itself"),
        (".", "the source root itself"),
        ("./app.py", "not a normalised path"),
        ("lib//util.py", "not a normalised path"),
        ("lib/", "not a normalised path"),
        (".git", "git metadata"),
        (".git/HEAD", "git metadata"),
        ("lib/.GIT", "git metadata"),
        ("a" * 300, "longer than an entry's may be"),
    ],
)
def test_a_removal_outside_the_tree_of_its_root_or_of_git_metadata_is_refused(
    store: BlobStore, base: str, path: str, problem: str
) -> None:
    message = _refused(store, _delta(store, base, _removing(path), _directory("src")))
    assert message.startswith("the delta removes") and problem in message


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("dirlink/util.py", "below 'src/dirlink', which is a link, not a directory"),
        ("link/x", "below 'src/link', which is a link, not a directory"),
        ("app.py/x", "below 'src/app.py', which is a file, not a directory"),
        ("no-such-file", "which its base does not have"),
        ("lib/no-such-file", "which its base does not have"),
    ],
)
def test_a_removal_through_a_link_or_a_file_or_of_nothing_is_refused(
    store: BlobStore, base: str, path: str, problem: str
) -> None:
    message = _refused(store, _delta(store, base, _removing(path), _directory("src")))
    assert f"the delta removes {path!r}" in message and problem in message


def test_a_removal_list_must_come_first_and_be_well_formed(store: BlobStore, base: str) -> None:
    late = _delta(store, base, _directory("src"), _removing("app.py"))
    assert "not its removal list 'removed'" in _refused(store, late)
    unended = _delta(store, base, _file(REMOVED_MEMBER, b"app.py"), _directory("src"))
    assert "its last path is not ended" in _refused(store, unended)
    a_directory = _delta(store, base, _directory(REMOVED_MEMBER), _directory("src"))
    assert "not its removal list" in _refused(store, a_directory)
    nothing = _delta(store, base)
    assert "no removal list" in _refused(store, nothing)


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        (_file("/etc/passwd"), "has an absolute path"),
        (_file("src/../../etc/passwd"), "points outside the source root"),
        (("src/dirlink/evil", b"x", tarfile.REGTYPE, ""), "would write through a link"),
        (("src/dev", b"", tarfile.CHRTYPE, ""), "devices are not allowed"),
        (("src/hard", b"", tarfile.LNKTYPE, "/etc/passwd"), "hard link to '/etc/passwd'"),
    ],
)
def test_a_delta_entry_a_whole_upload_would_refuse_is_refused(
    store: BlobStore, base: str, member: tuple[str, bytes, bytes, str], problem: str
) -> None:
    message = _refused(store, _delta(store, base, _removing(), _directory("src"), member))
    assert problem in message


def test_git_metadata_in_a_delta_is_left_out(store: BlobStore, base: str) -> None:
    source = _delta(store, base, _removing(), _directory("src"), _file("src/.git/config"))
    tree = streamed_tree(store, source)
    assert "src/app.py" in tree and not any(".git" in name for name in tree)


def test_the_limits_hold_for_the_base_and_the_delta_together(store: BlobStore, base: str) -> None:
    tree = streamed_tree(store, _delta(store, base, _removing(), _directory("src")))
    few = ExtractLimits(max_files=len(tree) + 3)
    files = [_file(f"src/new-{index}.txt") for index in range(5)]
    assert "more than" in _refused(store, _delta(store, base, _removing(), *files), few)
    small = ExtractLimits(max_total_bytes=90_000)  # the base's files are 84 kB
    big = _file("src/big.bin", b"\0" * 20_000)
    assert "STI_SOURCE_MAX_BYTES" in _refused(store, _delta(store, base, _removing(), big), small)
    # what the delta replaces counts too: it was read
    replacing = _file("src/static/big.css", b"\0" * 20_000)
    assert "STI_SOURCE_MAX_BYTES" in _refused(
        store, _delta(store, base, _removing(), replacing), small
    )


def test_a_base_entry_below_a_link_the_delta_replaces_is_refused(store: BlobStore) -> None:
    digest, _ = store.put(
        [_tar(_directory("src"), ("src/l", b"", tarfile.SYMTYPE, "/etc"), _file("src/l/passwd"))]
    )
    source = _delta(store, digest, _removing(), _directory("src"), _directory("src/l"))
    assert "is below an entry that is not a directory" in _refused(store, source)


def test_a_delta_names_a_base_by_its_digest_only() -> None:
    with pytest.raises(InvalidInput, match="is not a sha256"):
        UploadRef.parse(f"sti+upload://sha256:{'a' * 64}/delta/upload%3A{'b' * 32}")
    with pytest.raises(InvalidInput, match="is not a sha256"):
        UploadRef.parse(f"sti+upload://upload:{'b' * 32}/delta/sha256%3A{'a' * 64}")
    with pytest.raises(InvalidInput, match="malformed"):
        UploadRef.parse(f"sti+upload://sha256:{'a' * 64}/delta")


def test_an_entry_below_a_link_the_delta_replaces_must_come_after_its_replacement(
    store: BlobStore, base: str
) -> None:
    """Laid over a copy of the base, it would be written through the link still there."""
    late = (_removing(), _directory("src"), _file("src/dirlink/evil"), _directory("src/dirlink"))
    message = _refused(store, _delta(store, base, *late))
    assert "'src/dirlink/evil' comes before the directory that replaces 'dirlink'" in message
    in_order = (_removing(), _directory("src"), _directory("src/dirlink"), _file("src/dirlink/ok"))
    assert "src/dirlink/ok" in streamed_tree(store, _delta(store, base, *in_order))
