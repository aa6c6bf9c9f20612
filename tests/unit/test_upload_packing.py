"""Packing a source on the laptop: the zstd stream is valid, whole and deterministic however
it is split into frames and threads."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
import redis
import zstandard

from sti.blobstore import BlobStore
from sti.errors import InvalidInput, SourceFetchFailed
from sti_submit.upload import SourceUpload, pack_directory, zstd_frames


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[index : index + size] for index in range(0, len(data), size)]


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024 - 1, 1024 * 1024, 5 * 1024 * 1024 + 17])
def test_zstd_frames_are_zstd_of_the_whole_input_and_the_same_every_time(size: int) -> None:
    data = os.urandom(size // 2) + b"source code " * (size // 24)
    packed = b"".join(zstd_frames(_pieces(data, 64 * 1024)))
    assert _unzstd(packed) == data
    assert b"".join(zstd_frames(_pieces(data, 1000))) == packed  # however the input is split


def test_a_packed_directory_has_whole_second_times_and_no_extended_headers(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "app.py").write_text("print('hi')\n")
    os.utime(source / "pkg" / "app.py", (1_700_000_000.75, 1_700_000_000.75))
    packed = tmp_path / "packed.tar"
    packed.write_bytes(_unzstd(b"".join(pack_directory(source))))
    with tarfile.open(packed) as tar:
        members = tar.getmembers()
    assert [member.pax_headers for member in members] == [{} for _ in members]
    assert {member.name.split("/", 1)[-1]: member.mtime for member in members}["pkg/app.py"] == (
        1_700_000_000
    )


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)


def test_a_file_that_cannot_be_read_fails_the_upload_naming_it_and_tells_its_readers(
    redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "app"
    source.mkdir()
    (source / "app.py").write_text("print('hi')\n")
    (source / "secret.key").write_text("key\n")
    opened = Path.open

    def refuse(path: Path, *args: object, **kwargs: object) -> object:
        if path.name == "secret.key":
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, *args, **kwargs)  # type: ignore[arg-type]

    store = BlobStore(redis_client, expires_s=600, max_bytes=10**6)
    upload = SourceUpload(store, source)
    assert upload.streams
    upload.open()
    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(InvalidInput, match=r"reading .*app to upload it failed: .*secret\.key"):
        upload.send()
    with pytest.raises(SourceFetchFailed, match=r"failed on the submitting side: .*Permission"):
        list(store.read(upload.ref.blob))
