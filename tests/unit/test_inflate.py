"""BackgroundGunzip reads what gzip.GzipFile reads, and fails where it fails; BackgroundUnzstd
reads zstd frames one after another, in bounded blocks."""

from __future__ import annotations

import gzip
import io
import os
import threading
import zlib
from gzip import BadGzipFile

import pytest
import zstandard

from sti_worker.engine.inflate import BackgroundGunzip, BackgroundUnzstd, inflated, unzstd


def _gzip(data: bytes, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def _read_all(blob: bytes, size: int = 256 * 1024) -> bytes:
    with BackgroundGunzip(io.BytesIO(blob)) as reader:
        parts = []
        while part := reader.read(size):
            parts.append(part)
        return b"".join(parts)


def test_members_one_after_another_with_zero_padding_between() -> None:
    first, second = os.urandom(3 * 1024 * 1024), b"x" * (5 * 1024 * 1024)
    blob = _gzip(first, 1) + b"\0" * 1000 + _gzip(second) + b"\0" * 7
    assert _read_all(blob) == first + second
    assert gzip.GzipFile(fileobj=io.BytesIO(blob)).read() == first + second


def test_small_reads_and_read_all_agree() -> None:
    data = os.urandom(200_000)
    with BackgroundGunzip(io.BytesIO(_gzip(data))) as reader:
        assert reader.read(1) == data[:1]
        assert reader.read(99_999) == data[1:100_000]
        assert reader.read() == data[100_000:]
        assert reader.read(10) == b""


def test_a_bomb_comes_out_in_bounded_blocks() -> None:
    blob = _gzip(b"\0" * (64 * 1024 * 1024), 9)
    assert len(blob) < 100_000
    assert max(len(block) for block in inflated(io.BytesIO(blob))) <= 1024 * 1024


def test_an_empty_stream_is_empty() -> None:
    assert _read_all(b"") == b""


@pytest.mark.parametrize(
    ("blob", "error"),
    [
        (_gzip(b"hello world" * 1000)[:-20], EOFError),  # cut short
        (_gzip(b"hello")[:-8] + b"\0\0\0\0\0\0\0\0", BadGzipFile),  # wrong CRC
        (_gzip(b"hello") + b"garbage", BadGzipFile),  # not a member after the first
        (b"PK\x03\x04 not gzip", BadGzipFile),
    ],
)
def test_what_gzip_refuses_is_refused(blob: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        _read_all(blob)
    with pytest.raises((EOFError, OSError, zlib.error)):
        gzip.decompress(blob)


def test_the_source_error_reaches_the_reader() -> None:
    class Broken(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            raise ConnectionError("store went away")

    with pytest.raises(ConnectionError, match="store went away"), BackgroundGunzip(Broken()) as r:
        r.read()


def test_closing_early_stops_the_thread_and_leaves_the_rest_of_the_source() -> None:
    source = io.BytesIO(_gzip(os.urandom(40 * 1024 * 1024), 1))
    reader = BackgroundGunzip(source)
    assert len(reader.read(1024)) == 1024
    reader.close()
    assert not [t for t in threading.enumerate() if t.name == "sti-decode"]
    assert source.tell() < len(source.getvalue())  # at most a few blocks ahead


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data)


def test_zstd_frames_one_after_another() -> None:
    first, second = os.urandom(3 * 1024 * 1024), b"x" * (5 * 1024 * 1024)
    with BackgroundUnzstd(io.BytesIO(_zstd(first) + _zstd(b"") + _zstd(second))) as reader:
        assert reader.read(10) == first[:10]
        assert reader.read() == first[10:] + second


def test_a_zstd_bomb_comes_out_in_bounded_blocks() -> None:
    blob = _zstd(b"\0" * (256 * 1024 * 1024))
    assert len(blob) < 20_000
    assert max(len(block) for block in unzstd(io.BytesIO(blob))) <= 1024 * 1024


@pytest.mark.parametrize(
    "blob",
    [
        _zstd(b"hello world" * 1000) + b"garbage after",
        _zstd(b"hello world")[:-4] + b"\0\0\0\0",  # wrong checksum
        b"\x1f\x8b not zstd",
    ],
)
def test_what_zstd_refuses_is_refused(blob: bytes) -> None:
    with pytest.raises(zstandard.ZstdError), BackgroundUnzstd(io.BytesIO(blob)) as reader:
        reader.read()
