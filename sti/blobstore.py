"""A content-addressed store of uploaded sources in Redis: chunked, expiring, size-capped.

Keyed by the SHA-256 of the content, so the same content is stored once. An upload is written
under a staging name while it is hashed, then renamed to its digest; readers verify the digest
of what they read.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from . import keys
from .errors import InvalidInput, SourceFetchFailed

if TYPE_CHECKING:
    from .redis_wire import RedisClient

CHUNK_BYTES = 1024 * 1024
_PIPELINE_CHUNKS = 8
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(f"{digest!r} is not a sha256:<64 hex> digest")
    return digest


def rechunk(chunks: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The same bytes in pieces of exactly size (the last one shorter)."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    if pending:
        yield bytes(pending)


class BlobStore:
    def __init__(self, client: RedisClient, *, expires_s: int, max_bytes: int) -> None:
        self._client = client
        self._expires_s = expires_s
        self.max_bytes = max_bytes

    def has(self, digest: str) -> bool:
        """True if the blob is stored whole; its expiry is renewed, as it is about to be used."""
        meta = self._client.hgetall(keys.blob_meta(check_digest(digest)))
        if not meta:
            return False
        pipe = self._client.pipeline(transaction=False)
        pipe.expire(keys.blob_meta(digest), self._expires_s)
        for index in range(int(meta[b"chunks"])):
            pipe.expire(keys.blob_chunk(digest, index), self._expires_s)
        return all(pipe.execute())

    def size(self, digest: str) -> int | None:
        """The stored blob's size in bytes, or None if it is not stored."""
        size = self._client.hget(keys.blob_meta(check_digest(digest)), "size")
        return int(size) if size is not None else None

    def put(self, chunks: Iterable[bytes]) -> tuple[str, int]:
        """Store chunks, hashing them on the way; return (digest, size). One pass, flat memory."""
        staging = f"staging-{uuid.uuid4().hex}"
        hasher = hashlib.sha256()
        size = count = 0
        pipe = self._client.pipeline(transaction=False)
        try:
            for chunk in rechunk(chunks):
                hasher.update(chunk)
                size += len(chunk)
                if size > self.max_bytes:
                    raise InvalidInput(self.too_large_message(size))
                pipe.set(keys.blob_chunk(staging, count), chunk, ex=self._expires_s)
                count += 1
                if len(pipe) >= _PIPELINE_CHUNKS:
                    pipe.execute()
            pipe.execute()
        except BaseException:
            pipe.reset()
            self._delete(staging, count)
            raise
        digest = f"sha256:{hasher.hexdigest()}"
        if self.has(digest):
            self._delete(staging, count)
        else:
            self._publish(staging, digest, count, size)
        return digest, size

    def _publish(self, staging: str, digest: str, count: int, size: int) -> None:
        pipe = self._client.pipeline(transaction=False)
        for index in range(count):
            pipe.rename(keys.blob_chunk(staging, index), keys.blob_chunk(digest, index))
        meta = keys.blob_meta(digest)
        pipe.hset(meta, mapping={"size": size, "chunks": count})
        pipe.expire(meta, self._expires_s)
        pipe.execute()

    def read(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes; raises SourceFetchFailed at the end if they do not match digest, and
        InvalidInput as soon as it is larger than max_bytes (the worker's STI_UPLOAD_MAX_BYTES
        holds whatever the client checked)."""
        meta = self._client.hgetall(keys.blob_meta(check_digest(digest)))
        if not meta:
            raise SourceFetchFailed(f"uploaded source {digest} is not in the store (expired?)")
        if int(meta.get(b"size", 0)) > self.max_bytes:
            raise InvalidInput(self.too_large_message(int(meta[b"size"])))
        hasher = hashlib.sha256()
        size = 0
        for index in range(int(meta[b"chunks"])):
            chunk = self._client.get(keys.blob_chunk(digest, index))
            if chunk is None:
                raise SourceFetchFailed(f"uploaded source {digest} is incomplete (expired?)")
            size += len(chunk)
            if size > self.max_bytes:  # whatever its record says: anyone on Redis can write one
                raise InvalidInput(self.too_large_message(size))
            hasher.update(chunk)
            yield chunk
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise SourceFetchFailed(f"uploaded source {digest} does not match its digest")

    def remember(self, fingerprint: str, digest: str) -> None:
        """Note that a source with this fingerprint packs to digest (see upload.fingerprint)."""
        self._client.set(keys.fingerprint(fingerprint), digest, ex=self._expires_s)

    def recall(self, fingerprint: str) -> str | None:
        """The digest a source with this fingerprint packed to, if it is still stored."""
        found = self._client.get(keys.fingerprint(fingerprint))
        digest = found.decode() if isinstance(found, bytes) else found
        return digest if digest and self.has(digest) else None

    def too_large_message(self, size: int) -> str:
        return (
            f"the source is {size} bytes or more compressed, above the upload limit of "
            f"{self.max_bytes} bytes (STI_UPLOAD_MAX_BYTES)"
        )

    def _delete(self, name: str, chunks: int) -> None:
        names = [keys.blob_chunk(name, index) for index in range(chunks)]
        if names:
            self._client.delete(*names)
