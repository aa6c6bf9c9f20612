"""Fetching sources that sti-submit uploaded into the blob store, on the worker.

A packed directory, a tar archive or a single file goes from Redis into the build context as one
stream, through the safe extractor's checks, with nothing written to the worker's disk; a zip
(which needs a seekable file) is extracted into the build's work dir. The digest is verified
while the content is read: a mismatch fails the build. A source named by its upload (sent
while the build starts) is read as it arrives.
"""

from __future__ import annotations

import itertools
import shutil
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from sti.archive_kinds import archive_kind
from sti.blobstore import BlobStore, is_upload_name
from sti.errors import InvalidInput, SourceFetchFailed
from sti.tarstreams import IterReader, TarPart, empty_directory
from sti.upload_refs import PACKED_DIR_PREFIX, ZSTD_MAGIC, UploadRef

from .engine.archives import extract_tar_stream, extract_zip, retar_tar_stream
from .engine.deltas import DeltaIndex, index_delta, retar_delta
from .engine.sources import FetchedSource, SourcePolicy, check_file_name, copy_single_file


def opener(store: Callable[[], BlobStore]) -> Callable[..., FetchedSource]:
    """The source opener the worker registers for sti+upload:// references."""

    def fetch(
        source: str, workdir: Path, sink: Callable[[str], None], policy: SourcePolicy
    ) -> FetchedSource:
        ref = UploadRef.parse(source)
        if _streamable(ref):
            size = _check_stored(store(), ref)
            if ref.kind == "delta":
                sink(f"Uploaded changes {ref.blob} go into the build over their base {ref.name}")
            elif is_upload_name(ref.blob):
                sink(f"Uploaded source {ref.blob} goes into the build as it arrives")
            else:
                sink(f"Uploaded source {ref.blob} goes straight into the build")
            return FetchedSource("", stream_from=source, size=size)
        sink(f"Fetching uploaded source {ref.blob}")
        chunks = store().read(ref.blob)
        target = workdir / "upload"
        target.mkdir()
        if ref.kind == "dir":
            packing, reader = _packed(chunks)
            # a packed directory keeps its links as links, as a local directory does
            extract_tar_stream(reader, target, packing, policy.limits, links_anywhere=True)
            _drain(reader)  # reading to the end verifies the digest
            return FetchedSource(str(target / PACKED_DIR_PREFIX))
        reader = IterReader(chunks)
        kind = archive_kind(ref.name) if ref.kind == "archive" else None
        if ref.kind == "archive" and kind is None:
            raise InvalidInput(f"uploaded archive {ref.name!r} is not of a known kind")
        if kind == "zip":
            archive = workdir / "upload.zip"
            with archive.open("wb") as out:
                shutil.copyfileobj(reader, out)
            extract_zip(archive, target, policy.limits)
            archive.unlink()
        elif kind:
            extract_tar_stream(reader, target, kind, policy.limits)
            _drain(reader)
        else:
            copy_single_file(reader, target, ref.name, policy.limits)
            _drain(reader)
        return FetchedSource(str(target))

    return fetch


def streamer(store: Callable[[], BlobStore]) -> Callable[..., TarPart]:
    """The source streamer the worker registers for sti+upload:// references."""

    def part(source: str, context_dir: str | None, policy: SourcePolicy) -> TarPart:
        ref = UploadRef.parse(source)

        def add(tar: tarfile.TarFile) -> None:
            blobs = store()
            if ref.kind == "delta":
                _add_delta(tar, blobs, ref, context_dir, policy)
                return
            chunks = blobs.read(ref.blob)
            reader = IterReader(chunks)
            if ref.kind == "file":
                _add_single_file(tar, ref, blobs.size(ref.blob), reader, context_dir, policy)
            elif ref.kind == "dir":
                packing, reader = _packed(chunks)
                # a packed directory keeps its links as links, as a local directory does
                retar_tar_stream(
                    reader,
                    packing,
                    policy.limits,
                    tar,
                    root=PACKED_DIR_PREFIX,
                    context_dir=context_dir,
                    links_anywhere=True,
                )
            else:
                kind = archive_kind(ref.name)
                assert kind
                retar_tar_stream(reader, kind, policy.limits, tar, context_dir=context_dir)
            _drain(reader)  # reading to the end verifies the digest

        return add

    return part


def layers(store: Callable[[], BlobStore]) -> Callable[..., tuple[str, TarPart] | None]:
    """The layer provider the worker registers for sti+upload:// references: of a delta that
    removes nothing, its base's reference and the part that lays it over a copy of the base
    (the base is read all the same, for the checks); None for any other upload."""

    def layer(
        source: str, context_dir: str | None, policy: SourcePolicy
    ) -> tuple[str, TarPart] | None:
        ref = UploadRef.parse(source)
        if ref.kind != "delta" or _index(store(), ref, policy).removed:
            return None

        def add(tar: tarfile.TarFile) -> None:
            _add_delta(tar, store(), ref, context_dir, policy, layer=True)

        return str(UploadRef(ref.name, "dir")), add

    return layer


def settled(store: Callable[[], BlobStore]) -> Callable[[str], str | None]:
    """The reference by content of an uploaded source (its digest, once all of it arrived)."""

    def name(source: str) -> str | None:
        ref = UploadRef.parse(source)
        digest = store().digest_of(ref.blob)
        return str(replace(ref, blob=digest)) if digest else None

    return name


def _packed(chunks: Iterator[bytes]) -> tuple[str, IterReader]:
    """How a packed directory was compressed, by its first bytes (tar.zst, or tar.gz from an
    older sti-submit), and a reader of all of it."""
    first = next(chunks, b"")
    packing = "tar.zst" if first.startswith(ZSTD_MAGIC) else "tar.gz"
    return packing, IterReader(itertools.chain([first], chunks))


def _add_delta(
    tar: tarfile.TarFile,
    blobs: BlobStore,
    ref: UploadRef,
    context_dir: str | None,
    policy: SourcePolicy,
    *,
    layer: bool = False,
) -> None:
    """The delta's base with the delta laid over it: the tree a whole upload gives (layer:
    what to put over a copy of the base to make it that tree)."""
    index = _index(blobs, ref, policy)
    base = _packed(blobs.read(ref.name))
    kind, delta = _packed(blobs.read(ref.blob))
    retar_delta(
        (base[1], base[0]),
        (delta, kind),
        index,
        policy.limits,
        tar,
        root=PACKED_DIR_PREFIX,
        context_dir=context_dir,
        layer=layer,
    )
    _drain(base[1])
    _drain(delta)


def _index(blobs: BlobStore, ref: UploadRef, policy: SourcePolicy) -> DeltaIndex:
    """The delta's removal list and entries, read whole: its digest is checked before anything
    is built from it."""
    kind, delta = _packed(blobs.read(ref.blob))
    index = index_delta(delta, kind, policy.limits, root=PACKED_DIR_PREFIX)
    _drain(delta)
    return index


def _streamable(ref: UploadRef) -> bool:
    return ref.kind != "archive" or archive_kind(ref.name) not in (None, "zip")


def _check_stored(store: BlobStore, ref: UploadRef) -> int:
    """The stored size of the upload (of a delta, with its base's), which must be there and
    within the cap."""
    total = 0
    for blob in ref.blobs:
        size = store.size(blob)
        if size is None:
            raise SourceFetchFailed(f"uploaded source {blob} is not in the store (expired?)")
        if size > store.max_bytes:
            raise InvalidInput(store.too_large_message(size))
        total += size
    return total


def _add_single_file(
    tar: tarfile.TarFile,
    ref: UploadRef,
    size: int | None,
    reader: IterReader,
    context_dir: str | None,
    policy: SourcePolicy,
) -> None:
    name = ref.name
    check_file_name(name)
    if context_dir:
        raise InvalidInput(f"--context-dir {context_dir!r} does not apply to a single file")
    if size is None or size > policy.limits.max_total_bytes:
        raise InvalidInput(
            f"source file {name} is larger than {policy.limits.max_total_bytes} bytes "
            "(STI_SOURCE_MAX_BYTES)"
        )
    empty_directory(PACKED_DIR_PREFIX)(tar)
    info = tarfile.TarInfo(f"{PACKED_DIR_PREFIX}/{name}")
    info.size, info.mode = size, 0o644
    tar.addfile(info, reader)


def _drain(reader: IterReader) -> None:
    while reader.read(1024 * 1024):
        pass
