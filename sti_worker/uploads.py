"""Fetching sources that sti-submit uploaded into the blob store, on the worker.

The digest is verified while the content is read; it is extracted only by the safe extractor.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .blobstore import BlobStore
from .engine.archives import archive_kind, extract_tar_stream, extract_zip
from .engine.errors import InvalidInput
from .engine.sources import FetchedSource, SourcePolicy, copy_single_file
from .engine.tarstreams import IterReader
from .upload_refs import PACKED_DIR_PREFIX, UploadRef


def opener(store: Callable[[], BlobStore]) -> Callable[..., FetchedSource]:
    """The source opener the worker registers for sti+upload:// references."""

    def fetch(
        source: str, workdir: Path, sink: Callable[[str], None], policy: SourcePolicy
    ) -> FetchedSource:
        ref = UploadRef.parse(source)
        sink(f"Fetching uploaded source {ref.digest}")
        chunks = store().read(ref.digest)
        target = workdir / "upload"
        target.mkdir()
        reader = IterReader(chunks)
        if ref.kind == "dir":
            # a packed directory keeps its links as links, as a local directory does
            extract_tar_stream(reader, target, "tar.gz", policy.limits, links_anywhere=True)
            _drain(reader)  # reading to the end verifies the digest
            return FetchedSource(str(target / PACKED_DIR_PREFIX))
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


def _drain(reader: IterReader) -> None:
    while reader.read(1024 * 1024):
        pass
