"""A content-addressed store of uploaded sources in Redis: chunked, expiring, size-capped.

A blob is named by the SHA-256 of its content (sha256:<hex>), so the same content is stored
once. An upload writes its chunks under a name of its own (upload:<hex>) while it hashes them,
then records its digest as pointing at them; readers verify the digest of what they read. An
upload can also be begun before its bytes are sent: a build then names it upload:<hex> and reads
its chunks as they arrive, checking at the end that they are what the uploader hashed.

Anyone on Redis can write any of it: records and chunks are read as untrusted (their counts
checked, a chunk read up to its size, a key of another type said), and an upload is known by
its digest only to a process that read it whole and found that digest (see digest_of).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from . import keys
from .errors import InvalidInput, SourceFetchFailed, StiError
from .redis_values import is_wrong_type, refused_type

if TYPE_CHECKING:
    from .redis_wire import RedisClient

CHUNK_BYTES = 1024 * 1024
_PIPELINE_CHUNKS = 4  # chunks sent in one round trip: a reader following the upload sees them
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_UPLOAD = re.compile(r"upload:[0-9a-f]{32}")
_WAIT_S = (0.005, 0.05)  # first and longest pause of a reader waiting for the next chunk
_MESSAGE_CHARS = 500
OPEN, DONE, FAILED = "open", "done", "failed"
# uploads this process read whole, with the digest it found: what names them by content (a
# record anyone can rewrite once the read is over does not); the most recent ones
_VERIFIED_UPLOADS: OrderedDict[str, str] = OrderedDict()
_VERIFIED_KEPT = 256


class MalformedBlob(SourceFetchFailed):
    """A blob's record or chunk is not what put writes: for has(), not stored."""


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise InvalidInput(f"{digest!r} is not a sha256:<64 hex> digest")
    return digest


def is_upload_name(name: str) -> bool:
    return isinstance(name, str) and bool(_UPLOAD.fullmatch(name))


def check_blob(name: str) -> str:
    """A blob's digest, or the name of an upload that may still be arriving."""
    if is_upload_name(name):
        return name
    if not isinstance(name, str) or not _DIGEST.fullmatch(name):
        raise InvalidInput(
            f"{name!r} is neither a sha256:<64 hex> digest nor an upload:<32 hex> name"
        )
    return name


def new_upload_name() -> str:
    return f"upload:{uuid.uuid4().hex}"


def rechunk(chunks: Iterable[bytes], size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The same bytes in pieces of exactly size (the last one shorter). A chunk of exactly size
    with nothing pending passes as it is; otherwise each byte is copied twice (in, and out as
    its piece), not three times (a slice of a bytearray, then bytes of it)."""
    pending = bytearray()
    for chunk in chunks:
        if not pending and len(chunk) == size and isinstance(chunk, bytes):
            yield chunk
            continue
        pending += chunk
        start = 0
        while len(pending) - start >= size:
            with memoryview(pending) as view:  # released before the yield: pending may grow
                piece = view[start : start + size].tobytes()
            start += size
            yield piece
        del pending[:start]
    if pending:
        yield bytes(pending)


class BlobStore:
    def __init__(
        self, client: RedisClient, *, expires_s: int, max_bytes: int, stall_s: float = 60
    ) -> None:
        self._client = client
        self._expires_s = expires_s
        self.max_bytes = max_bytes
        self.stall_s = stall_s  # how long a reader waits for the next chunk of an open upload

    # what is stored

    def has(self, name: str) -> bool:
        """True if the blob is stored whole, or is an upload still arriving; the expiry of what
        is stored is renewed, as it is about to be used."""
        upload = is_upload_name(check_blob(name))
        try:
            record = self._record(name)
        except MalformedBlob:
            return False
        if not record or (upload and record.get(b"state") == FAILED.encode()):
            return False
        if upload and record.get(b"state") == OPEN.encode():
            return bool(self._client.expire(keys.blob_meta(name), self._expires_s))
        try:
            _, chunks = self._checked(name, record)
            chunks_name = name if upload else _chunks_name(name, record)
        except (MalformedBlob, InvalidInput):  # put writes it anew, counts and all
            return False
        return self._renew(name, chunks_name, chunks)

    def _renew(self, meta_name: str, chunks_name: str, count: int) -> bool:
        pipe = self._client.pipeline(transaction=False)
        pipe.expire(keys.blob_meta(meta_name), self._expires_s)
        for index in range(count):
            pipe.expire(keys.blob_chunk(chunks_name, index), self._expires_s)
        return all(pipe.execute())

    def size(self, name: str) -> int | None:
        """The stored blob's size in bytes (of an upload still arriving, the size its uploader
        expects), or None if it is not stored; an upload that failed raises its failure."""
        upload = is_upload_name(check_blob(name))
        record = self._record(name)
        if not record:
            return None
        if upload:
            self._raise_if_failed(name, record)
            if record.get(b"state") != DONE.encode():
                return _count(name, record, b"expected")
        size, _ = self._checked(name, record)
        return size

    def digest_of(self, name: str) -> str | None:
        """The digest of a blob: itself, or that of an upload this process read whole (read)
        and found to be that digest. Not its record's: one naming another source's digest
        would name a copy of this content as that source (source_images), or this build's
        copy of that source as its own."""
        if not is_upload_name(check_blob(name)):
            return name
        return _VERIFIED_UPLOADS.get(name)

    # uploading

    def begin(self, name: str, expected_bytes: int) -> None:
        """Open an upload (new_upload_name) that readers may follow before put(chunks,
        upload=name) sends it."""
        pipe = self._client.pipeline(transaction=False)
        record = {"state": OPEN, "expected": expected_bytes}
        pipe.hset(keys.blob_meta(check_blob(name)), mapping=record)
        pipe.expire(keys.blob_meta(name), self._expires_s)
        pipe.execute()

    def put(self, chunks: Iterable[bytes], *, upload: str | None = None) -> tuple[str, int]:
        """Store chunks, hashing them on the way; return (digest, size). One pass, flat memory.
        With upload (from begin), readers following it get each chunk as it is stored, and its
        end or its failure."""
        name = upload or new_upload_name()
        hasher = hashlib.sha256()
        size = count = 0
        pipe = self._client.pipeline(transaction=False)
        try:
            for chunk in rechunk(chunks):
                hasher.update(chunk)
                size += len(chunk)
                if size > self.max_bytes:
                    raise InvalidInput(self.too_large_message(size))
                pipe.set(keys.blob_chunk(name, count), chunk, ex=self._expires_s)
                count += 1
                if len(pipe) >= _PIPELINE_CHUNKS:
                    pipe.execute()
            pipe.execute()
        except BaseException as error:
            pipe.reset()
            self._delete(name, count)
            if upload:
                self.fail(upload, _failure_message(error))
            raise
        digest = f"sha256:{hasher.hexdigest()}"
        stored_before = self.has(digest)
        if upload:
            record = {"state": DONE, "digest": digest, "size": size, "chunks": count}
            self._client.hset(keys.blob_meta(upload), mapping=record)
        elif stored_before:
            self._delete(name, count)
        if not stored_before:
            self._publish(name, digest, count, size)
        # an upload others followed keeps its chunks when the content was stored already: a
        # reader may still be on them, and they expire
        return digest, size

    def fail(self, upload: str, message: str) -> None:
        """Tell the readers of an upload that it will not arrive, and why."""
        record = {"state": FAILED, "message": message[:_MESSAGE_CHARS]}
        self._client.hset(keys.blob_meta(check_blob(upload)), mapping=record)

    def _publish(self, name: str, digest: str, count: int, size: int) -> None:
        meta = keys.blob_meta(digest)
        try:
            self._write_record(meta, {"size": size, "chunks": count, "name": name})
        except Exception as error:
            if not is_wrong_type(error):
                raise
            self._client.delete(meta)  # a key put never wrote, in the record's place
            self._write_record(meta, {"size": size, "chunks": count, "name": name})

    def _write_record(self, meta: str, record: dict[str, str | int]) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.hset(meta, mapping=record)
        pipe.expire(meta, self._expires_s)
        pipe.execute()

    # reading

    def read(self, name: str) -> Iterator[bytes]:
        """The blob's bytes (an upload's as they arrive); raises SourceFetchFailed at the end if
        they do not match its digest, and InvalidInput as soon as it is larger than max_bytes
        (the worker's STI_UPLOAD_MAX_BYTES holds whatever the client checked)."""
        if is_upload_name(check_blob(name)):
            return self._follow(name)
        return self._read_stored(name)

    def _read_stored(self, digest: str) -> Iterator[bytes]:
        meta = self._record(digest)
        if not meta:
            raise SourceFetchFailed(f"uploaded source {digest} is not in the store (expired?)")
        _, chunks = self._checked(digest, meta)
        chunks_name = _chunks_name(digest, meta)
        hasher = hashlib.sha256()
        size = 0
        try:
            for index in range(chunks):
                chunk = self._chunk(digest, chunks_name, index)
                if chunk is None:
                    raise SourceFetchFailed(f"uploaded source {digest} is incomplete (expired?)")
                size += len(chunk)
                if size > self.max_bytes:  # whatever its record says
                    raise InvalidInput(self.too_large_message(size))
                hasher.update(chunk)
                yield chunk
            if f"sha256:{hasher.hexdigest()}" != digest:
                raise SourceFetchFailed(f"uploaded source {digest} does not match its digest")
        except StiError:
            # not this content, whoever wrote it: taken for not stored from now on, or every
            # submission of the content would find it stored (renewing it) and fail the same
            self._client.delete(keys.blob_meta(digest))
            raise

    def _chunk(self, name: str, chunks_name: str, index: int) -> bytes | None:
        """A chunk of at most CHUNK_BYTES (one longer is not one put wrote: refused before it
        is read whole); None if there is none (put writes none empty)."""
        key = keys.blob_chunk(chunks_name, index)
        try:
            chunk = self._client.execute_command("GETRANGE", key, 0, CHUNK_BYTES)
        except Exception as error:
            if not (kind := refused_type(self._client, key, error)):
                raise
            raise MalformedBlob(
                f"uploaded source {name} is malformed: its chunk {index} is a {kind}, not a string"
            ) from None
        if len(chunk) > CHUNK_BYTES:
            raise MalformedBlob(
                f"uploaded source {name} is malformed: its chunk {index} holds more than "
                f"{CHUNK_BYTES} bytes"
            )
        return bytes(chunk) or None

    def _follow(self, upload: str) -> Iterator[bytes]:
        """An upload's chunks as its uploader stores them, until its record says it is done."""
        hasher = hashlib.sha256()
        size = index = 0
        pause, longest = _WAIT_S
        waiting_since = time.monotonic()
        while True:
            chunk = self._chunk(upload, upload, index)
            if chunk is not None:
                size += len(chunk)
                if size > self.max_bytes:
                    raise InvalidInput(self.too_large_message(size))
                hasher.update(chunk)
                index += 1
                yield chunk
                pause, waiting_since = _WAIT_S[0], time.monotonic()
                continue
            record = self._record(upload)
            if not record:
                raise SourceFetchFailed(f"uploaded source {upload} is not in the store (expired?)")
            self._raise_if_failed(upload, record)
            if record.get(b"state") == DONE.encode():
                if self._client.exists(keys.blob_chunk(upload, index)):
                    continue  # stored between the read and the record
                if index != self._checked(upload, record)[1]:
                    raise SourceFetchFailed(f"uploaded source {upload} is incomplete (expired?)")
                digest = f"sha256:{hasher.hexdigest()}"
                if digest != record.get(b"digest", b"").decode(errors="replace"):
                    raise SourceFetchFailed(f"uploaded source {upload} does not match its digest")
                _remember_verified(upload, digest)
                return
            if time.monotonic() - waiting_since > self.stall_s:
                raise SourceFetchFailed(
                    f"the upload of {upload} stopped: nothing arrived for {self.stall_s:g}s "
                    "(STI_UPLOAD_STALL_TIMEOUT)"
                )
            time.sleep(pause)
            pause = min(pause * 2, longest)

    def _record(self, name: str) -> dict[bytes, bytes]:
        key = keys.blob_meta(name)
        try:
            return self._client.hgetall(key)
        except Exception as error:
            if not (kind := refused_type(self._client, key, error)):
                raise
            raise MalformedBlob(
                f"uploaded source {name} has a record that is a {kind}, not a hash"
            ) from None

    def _checked(self, name: str, record: dict[bytes, bytes]) -> tuple[int, int]:
        """The size and chunk count of a stored blob's record, which anyone on Redis could have
        written: counts of digits, a size within max_bytes (InvalidInput past it, as the
        reader's own count would be) and as many chunks as put cuts that size into, so nothing
        loops or allocates for more than the cap."""
        size, chunks = _count(name, record, b"size"), _count(name, record, b"chunks")
        if size > self.max_bytes:
            raise InvalidInput(self.too_large_message(size))
        if chunks != -(-size // CHUNK_BYTES):
            raise MalformedBlob(
                f"uploaded source {name} has a malformed record: {chunks} chunks of "
                f"{CHUNK_BYTES} bytes cannot hold {size} bytes"
            )
        return size, chunks

    def _raise_if_failed(self, upload: str, record: dict[bytes, bytes]) -> None:
        if record.get(b"state") == FAILED.encode():
            said = record.get(b"message", b"").decode("utf-8", errors="replace")
            said = "".join(c if c.isprintable() else " " for c in said[:_MESSAGE_CHARS])
            raise SourceFetchFailed(f"the upload of {upload} failed on the submitting side: {said}")

    # fingerprints

    def remember(self, fingerprint: str, digest: str) -> None:
        """Note that a source with this fingerprint packs to digest (see upload.fingerprint)."""
        self._client.set(keys.fingerprint(fingerprint), digest, ex=self._expires_s)

    def recall(self, fingerprint: str) -> str | None:
        """The digest a source with this fingerprint packed to, if it is still stored."""
        found = self._client.get(keys.fingerprint(fingerprint))
        digest = found.decode() if isinstance(found, bytes) else found
        return digest if digest and _DIGEST.fullmatch(digest) and self.has(digest) else None

    def too_large_message(self, size: int) -> str:
        return (
            f"the source is {size} bytes or more compressed, above the upload limit of "
            f"{self.max_bytes} bytes (STI_UPLOAD_MAX_BYTES)"
        )

    def _delete(self, name: str, chunks: int) -> None:
        names = [keys.blob_chunk(name, index) for index in range(chunks)]
        if names:
            self._client.delete(*names)


def _count(name: str, record: dict[bytes, bytes], field: bytes) -> int:
    """A count from a record anyone on Redis could have written: ASCII digits, at most 15."""
    value = record.get(field, b"0")
    if not value.isdigit() or len(value) > 15:  # bytes: ASCII digits only
        raise MalformedBlob(
            f"uploaded source {name} has a record with a malformed {field.decode()}: {value[:40]!r}"
        )
    return int(value)


def _chunks_name(digest: str, meta: dict[bytes, bytes]) -> str:
    """Where a stored blob's chunks are: under the upload that stored it (an older sti-submit
    renamed them to the digest)."""
    name = meta.get(b"name", digest.encode()).decode(errors="replace")
    if name != digest and not is_upload_name(name):
        raise MalformedBlob(f"uploaded source {digest} has a malformed record")
    return name


def _remember_verified(upload: str, digest: str) -> None:
    _VERIFIED_UPLOADS[upload] = digest
    _VERIFIED_UPLOADS.move_to_end(upload)
    while len(_VERIFIED_UPLOADS) > _VERIFIED_KEPT:
        _VERIFIED_UPLOADS.popitem(last=False)


def _failure_message(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "the upload was interrupted"
    return str(error) or type(error).__name__
