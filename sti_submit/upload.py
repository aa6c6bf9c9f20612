"""Packing a local source on the submitting machine and uploading it to the blob store.

A directory becomes a deterministic tar.gz stream (sorted, owner-less, .stiignore and --exclude
applied); it is packed twice, once to learn its digest and once to upload it, so memory stays
flat and content the store already has is never sent again.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sti_worker.engine.archives import archive_kind

from sti_worker.blobstore import BlobStore
from sti_worker.engine.errors import InvalidInput
from sti_worker.engine.ignore import ignore_matcher
from sti_worker.engine.tarstreams import directory, stream_tar
from sti_worker.upload_refs import PACKED_DIR_PREFIX, UploadRef

_FILE_CHUNK = 1024 * 1024
_GZIP_LEVEL = 1  # sources are mostly text; speed matters more than the last few percent


@dataclass(frozen=True)
class Uploaded:
    ref: UploadRef
    size: int
    sent: bool


def gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """gzip with a fixed header (no time stamp, no name), so equal input gives equal bytes."""
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)
    for chunk in chunks:
        compressed = compressor.compress(chunk)
        if compressed:
            yield compressed
    yield compressor.flush()


def pack_directory(root: Path, exclude: Iterable[str] = ()) -> Iterator[bytes]:
    skip = ignore_matcher(root, exclude)
    return gzip_chunks(stream_tar([directory(root, PACKED_DIR_PREFIX, skip=skip)]))


def read_file(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(_FILE_CHUNK):
            yield chunk


def upload_source(store: BlobStore, path: Path, exclude: Iterable[str] = ()) -> Uploaded:
    """Upload a local directory, archive or file unless the store already has its content."""
    exclude = tuple(exclude)
    if path.is_dir():
        kind, name = "dir", ""
        produce: Callable[[], Iterator[bytes]] = lambda: pack_directory(path, exclude)  # noqa: E731
    elif path.is_file():
        kind = "archive" if archive_kind(path.name) else "file"
        name = path.name
        produce = lambda: read_file(path)  # noqa: E731
    else:
        raise InvalidInput(f"SOURCE {str(path)!r} is neither a directory nor a regular file")
    digest, size = _digest_of(produce(), store)
    ref = UploadRef(digest, kind, name)
    if store.has(digest):
        return Uploaded(ref, size, sent=False)
    store.put(digest, produce())
    return Uploaded(ref, size, sent=True)


def _digest_of(chunks: Iterable[bytes], store: BlobStore) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
        if size > store.max_bytes:
            raise InvalidInput(store.too_large_message(size))
    return f"sha256:{hasher.hexdigest()}", size
