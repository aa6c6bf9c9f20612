"""gzip and zstd decoded on a thread of their own, a few blocks ahead of the reader.

Decoding is half of what unpacking an uploaded source costs the worker, and zlib and zstd let go
of the GIL while they work: on its own thread decoding overlaps with the tar checks of the reader
instead of adding to them. gzip reads as gzip.GzipFile does: members one after another, zero
padding between them, the CRC and length of each checked, a broken stream a BadGzipFile (with
GzipFile's words) and one cut short an EOFError. zstd reads frames one after another; no call
makes more than a block, however small its input.
"""

from __future__ import annotations

import queue
import re
import threading
import zlib
from collections.abc import Callable, Iterator
from gzip import BadGzipFile
from typing import Protocol

import zstandard

_BLOCK = 1024 * 1024  # read from the source, and the most one inflate call may produce
_AHEAD = 8  # blocks inflated and not yet read: the memory this costs is bounded
_GZIP = 31  # zlib's window bits for a gzip header and trailer
_FIRST_WINDOW = 256  # the input a new member is first given (see inflated)
_NOT_PADDING = re.compile(rb"[^\0]")
_TRUNCATED = "Compressed file ended before the end-of-stream marker was reached"
_ZLIB_REASONS = {  # zlib's words for what gzip.GzipFile says in its own
    "incorrect data check": "CRC check failed",
    "incorrect length check": "length check failed",
    "incorrect header check": "Not a gzipped file",
}


class Readable(Protocol):
    def read(self, size: int = -1) -> bytes: ...


class BackgroundDecoder:
    """A readable of the decoded bytes of source; close() stops the thread and waits for it,
    after which the caller may read the rest of source itself."""

    def __init__(self, source: Readable, decode: Callable[[Readable], Iterator[bytes]]) -> None:
        self._source = source
        self._decode = decode
        self._blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_AHEAD)
        self._stopping = threading.Event()
        self._pending = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._run, name="sti-decode", daemon=True)
        self._thread.start()

    def __enter__(self) -> BackgroundDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        while wanted is None or wanted > 0:
            if not self._pending and not self._next_block():
                break
            take = len(self._pending) if wanted is None else min(wanted, len(self._pending))
            parts.append(bytes(self._pending[:take]))
            self._pending = self._pending[take:]
            if wanted is not None:
                wanted -= take
        return b"".join(parts)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _next_block(self) -> bool:
        if self._ended:
            return False
        item = self._blocks.get()
        if item is None:
            self._ended = True
            return False
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        self._pending = memoryview(item)
        return True

    def _run(self) -> None:
        try:
            for block in self._decode(self._source):
                if not self._put(block):
                    return
            self._put(None)
        except BaseException as error:  # the reader's to handle, on its own thread
            self._put(error)

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stopping.is_set():
            try:
                self._blocks.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


class BackgroundGunzip(BackgroundDecoder):
    def __init__(self, source: Readable) -> None:
        super().__init__(source, inflated)


class BackgroundUnzstd(BackgroundDecoder):
    def __init__(self, source: Readable) -> None:
        super().__init__(source, unzstd)


def unzstd(source: Readable) -> Iterator[bytes]:
    """The decoded bytes of zstd frames one after another, at most _BLOCK at a time. A stream
    cut short inside a frame ends without an error (zstandard's reader does not tell), so this
    reads only uploads, whose digest makes them exactly what their sender stored: a short one
    is a shorter source of the sender's own, and the tar reader fails a tar cut short."""
    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_size=_BLOCK, read_across_frames=True, closefd=False
    )
    while block := reader.read(_BLOCK):
        yield block


def inflated(source: Readable) -> Iterator[bytes]:
    """The inflated bytes of a gzip stream of one or more members, at most _BLOCK at a time.

    A member is given its input in windows growing from _FIRST_WINDOW: zlib copies what follows
    a member's end into unused_data, and a block of 20-byte empty members, each handed the whole
    rest of the block, cost a copy of half a MiB per 20 bytes (0.3 s a MiB)."""
    member: zlib._Decompress | None = None
    window = _FIRST_WINDOW
    while block := source.read(_BLOCK):
        data, at = memoryview(block), 0
        while at < len(data):
            if member is None:
                found = _NOT_PADDING.search(block, at)  # zeros after a member, as gzip allows
                if not found:
                    break
                at, member, window = found.start(), zlib.decompressobj(_GZIP), _FIRST_WINDOW
            piece = data[at : at + window]
            yield from _bounded(member, piece)
            if member.eof:
                at += len(piece) - len(member.unused_data)
                member = None
            else:
                at += len(piece)
                window = min(2 * window, _BLOCK)
    if member is not None:
        raise EOFError(_TRUNCATED)


def _bounded(member: zlib._Decompress, data: bytes | memoryview) -> Iterator[bytes]:
    """Inflate data in pieces of at most _BLOCK, so a small input cannot make a huge block. A
    full piece may leave output inside zlib with no input left, so it asks again. After the
    member's end, what is left of data is its unused_data."""
    out = _inflate(member, data)
    while True:
        if out:
            yield out
        if member.eof or (not member.unconsumed_tail and len(out) < _BLOCK):
            return
        out = _inflate(member, member.unconsumed_tail)


def _inflate(member: zlib._Decompress, data: bytes | memoryview) -> bytes:
    try:
        return member.decompress(data, _BLOCK)
    except zlib.error as error:
        reason = str(error).rpartition(": ")[2]
        raise BadGzipFile(_ZLIB_REASONS.get(reason, str(error))) from None
