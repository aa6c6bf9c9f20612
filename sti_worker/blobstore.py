"""A content-addressed store of uploaded sources in Redis: chunked, expiring, size-capped.

Keyed by SHA-256, so the same content is stored once and submitting it again uploads nothing;
readers verify the digest of what they read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

import redis

from . import keys
from .engine.errors import InvalidInput, SourceFetchFailed

CHUNK_BYTES = 1024 * 1024
_PIPELINE_CHUNKS = 8
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
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
    def __init__(self, client: redis.Redis, *, expires_s: int, max_bytes: int) -> None:
        self._client = client
        self._expires_s = expires_s
        self.max_bytes = max_bytes

    def has(self, digest: str) -> bool:
        """True if the blob is stored whole; its expiry is renewed, as it is about to be used."""
        meta = self._client.hgetall(keys.blob_meta(check_digest(digest)))
        if not meta:
            return False
        chunks = int(meta[b"chunks"])
        pipe = self._client.pipeline(transaction=False)
        pipe.expire(keys.blob_meta(digest), self._expires_s)
        for index in range(chunks):
            pipe.expire(keys.blob_chunk(digest, index), self._expires_s)
        return all(pipe.execute())

    def put(self, digest: str, chunks: Iterable[bytes]) -> int:
        """Store chunks as the blob digest; refuse content that does not match it or is too big."""
        check_digest(digest)
        hasher = hashlib.sha256()
        size = 0
        count = 0
        pipe = self._client.pipeline(transaction=False)
        for chunk in rechunk(chunks):
            hasher.update(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                self._delete(digest, count + len(pipe))
                raise InvalidInput(self.too_large_message(size))
            pipe.set(keys.blob_chunk(digest, count), chunk, ex=self._expires_s)
            count += 1
            if len(pipe) >= _PIPELINE_CHUNKS:
                pipe.execute()
        pipe.execute()
        if f"sha256:{hasher.hexdigest()}" != digest:
            self._delete(digest, count)
            raise InvalidInput("the source changed while it was being uploaded; submit again")
        meta = keys.blob_meta(digest)
        self._client.hset(meta, mapping={"size": size, "chunks": count})
        self._client.expire(meta, self._expires_s)
        return size

    def read(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes; raises SourceFetchFailed at the end if they do not match digest."""
        meta = self._client.hgetall(keys.blob_meta(check_digest(digest)))
        if not meta:
            raise SourceFetchFailed(f"uploaded source {digest} is not in the store (expired?)")
        hasher = hashlib.sha256()
        for index in range(int(meta[b"chunks"])):
            chunk = self._client.get(keys.blob_chunk(digest, index))
            if chunk is None:
                raise SourceFetchFailed(f"uploaded source {digest} is incomplete (expired?)")
            hasher.update(chunk)
            yield chunk
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise SourceFetchFailed(f"uploaded source {digest} does not match its digest")

    def too_large_message(self, size: int) -> str:
        return (
            f"the source is {size} bytes or more compressed, above the upload limit of "
            f"{self.max_bytes} bytes (STI_UPLOAD_MAX_BYTES)"
        )

    def _delete(self, digest: str, chunks: int) -> None:
        names = [keys.blob_chunk(digest, index) for index in range(chunks)]
        if names:
            self._client.delete(*names)
