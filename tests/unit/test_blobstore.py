"""BlobStore: uploaded sources in Redis, named by their sha256, chunked, capped and expiring;
a reader gets exactly what was stored or a SourceFetchFailed. Every test stores content of its
own (a random salt), so digests never collide with other tests'."""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from sti import keys
from sti.blobstore import (
    CHUNK_BYTES,
    BlobStore,
    check_blob,
    check_digest,
    is_upload_name,
    new_upload_name,
    rechunk,
)
from sti.errors import InvalidInput, SourceFetchFailed

EXPIRES_S = 600


@pytest.fixture
def store(redis_client: redis.Redis) -> Iterator[BlobStore]:
    yield BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=4 * CHUNK_BYTES)


def unique(size: int = 0) -> bytes:
    """Content no other test stores: a random line, then size bytes of filler."""
    return f"{uuid.uuid4().hex}\n".encode() + b"x" * size


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def test_chunks_come_back_whole_under_the_digest_of_their_content(store: BlobStore) -> None:
    data = unique(2 * CHUNK_BYTES + 123)
    pieces = [data[:10], data[10 : CHUNK_BYTES + 7], data[CHUNK_BYTES + 7 :]]
    digest, size = store.put(pieces)
    assert (digest, size) == (sha256(data), len(data))
    read = list(store.read(digest))
    assert b"".join(read) == data
    assert [len(chunk) for chunk in read] == [CHUNK_BYTES, CHUNK_BYTES, len(data) - 2 * CHUNK_BYTES]
    assert store.has(digest)
    assert store.size(digest) == len(data)


def _chunk(redis_client: redis.Redis, digest: str, index: int) -> str:
    """The key of a stored blob's chunk: under the upload that stored it."""
    name = redis_client.hget(keys.blob_meta(digest), "name")
    assert name and is_upload_name(name.decode())
    return keys.blob_chunk(name.decode(), index)


def test_the_same_content_is_stored_once(redis_client: redis.Redis, store: BlobStore) -> None:
    data = unique()
    first, _ = store.put([data])
    meta = redis_client.hgetall(keys.blob_meta(first))
    uploads = set(redis_client.keys(f"{keys.PREFIX}blob:upload:*"))
    second, _ = store.put([data[:5], data[5:]])
    assert first == second
    assert redis_client.hgetall(keys.blob_meta(first)) == meta
    assert meta[b"size"] == b"%d" % len(data) and meta[b"chunks"] == b"1"
    assert set(redis_client.keys(f"{keys.PREFIX}blob:upload:*")) == uploads  # none left


def test_stored_blobs_expire(redis_client: redis.Redis, store: BlobStore) -> None:
    digest, _ = store.put([unique(CHUNK_BYTES)])
    names = [keys.blob_meta(digest), *(_chunk(redis_client, digest, i) for i in (0, 1))]
    for name in names:
        assert 0 < redis_client.ttl(name) <= EXPIRES_S, name


def test_has_renews_the_expiry_of_every_part(redis_client: redis.Redis, store: BlobStore) -> None:
    digest, _ = store.put([unique(CHUNK_BYTES)])
    names = [keys.blob_meta(digest), *(_chunk(redis_client, digest, i) for i in (0, 1))]
    for name in names:
        redis_client.expire(name, 5)
    assert store.has(digest)
    for name in names:
        assert redis_client.ttl(name) > 5, name


def test_content_over_the_cap_is_refused_and_nothing_is_left(
    redis_client: redis.Redis,
) -> None:
    small = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=CHUNK_BYTES + 10)
    data = unique(CHUNK_BYTES + 10)
    assert len(data) > small.max_bytes
    with pytest.raises(InvalidInput, match="above the upload limit"):
        small.put([data])
    assert not small.has(sha256(data))
    assert small.size(sha256(data)) is None


def test_content_of_exactly_the_cap_is_stored(redis_client: redis.Redis) -> None:
    data = unique(100)
    exact = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=len(data))
    digest, size = exact.put([data])
    assert size == exact.max_bytes
    assert b"".join(exact.read(digest)) == data


def test_a_missing_blob_is_not_stored_and_reading_it_fails(store: BlobStore) -> None:
    digest = sha256(unique())
    assert not store.has(digest)
    assert store.size(digest) is None
    with pytest.raises(SourceFetchFailed, match="not in the store"):
        list(store.read(digest))


def test_a_blob_missing_a_chunk_fails_as_incomplete(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    digest, _ = store.put([unique(CHUNK_BYTES)])
    redis_client.delete(_chunk(redis_client, digest, 1))
    with pytest.raises(SourceFetchFailed, match="incomplete"):
        list(store.read(digest))
    assert not store.has(digest)


def test_content_that_does_not_match_its_digest_fails_at_the_end(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    data = unique(CHUNK_BYTES)
    digest, _ = store.put([data])
    redis_client.set(_chunk(redis_client, digest, 1), b"tampered")
    reader = store.read(digest)
    assert next(reader) == data[:CHUNK_BYTES]  # the bytes flow, the check is at the end
    with pytest.raises(SourceFetchFailed, match="does not match its digest"):
        list(reader)


def test_a_fingerprint_recalls_its_digest_while_the_blob_is_stored(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    digest, _ = store.put([unique()])
    fingerprint = uuid.uuid4().hex
    assert store.recall(fingerprint) is None
    store.remember(fingerprint, digest)
    assert store.recall(fingerprint) == digest
    assert 0 < redis_client.ttl(keys.fingerprint(fingerprint)) <= EXPIRES_S
    redis_client.delete(keys.blob_meta(digest))
    assert store.recall(fingerprint) is None


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "sha256:",
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:" + "A" * 64,
        "md5:" + "0" * 64,
        "sha256:../" + "0" * 61,
        "0" * 64,
    ],
)
def test_anything_but_a_sha256_digest_is_refused(store: BlobStore, digest: str) -> None:
    with pytest.raises(InvalidInput, match="is not a sha256:<64 hex> digest"):
        check_digest(digest)
    with pytest.raises(InvalidInput):
        store.has(digest)
    with pytest.raises(InvalidInput):
        list(store.read(digest))


def test_a_digest_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidInput):
        check_digest("sha256:" + "0" * 64 + "\n")


def test_a_digest_is_returned_as_given() -> None:
    digest = "sha256:" + "ab" * 32
    assert check_digest(digest) == digest


def test_rechunk_cuts_any_pieces_into_equal_ones() -> None:
    assert list(rechunk([b"ab", b"", b"cdefg", b"h"], size=3)) == [b"abc", b"def", b"gh"]
    assert list(rechunk([], size=3)) == []
    assert list(rechunk([b"abcdefgh"], size=3)) == [b"abc", b"def", b"gh"]
    assert list(rechunk([bytearray(b"abc"), b"de", b"fgh", b"ijk"], size=3)) == [
        b"abc",
        b"def",
        b"ghi",
        b"jk",
    ]


def test_rechunk_passes_a_chunk_of_the_size_on_without_copying_it() -> None:
    whole = os.urandom(4096)
    pieces = list(rechunk([whole, b"x", whole], size=4096))
    assert pieces[0] is whole
    assert b"".join(pieces) == whole + b"x" + whole
    assert [len(piece) for piece in pieces] == [4096, 4096, 1]


def test_the_reader_holds_its_own_cap_whatever_the_uploader_checked(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    digest, size = store.put([unique(2 * CHUNK_BYTES)])
    worker = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=CHUNK_BYTES)
    with pytest.raises(InvalidInput, match="STI_UPLOAD_MAX_BYTES"):
        next(worker.read(digest))
    assert size > worker.max_bytes


def test_a_record_that_understates_the_size_does_not_get_past_the_cap(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    digest, _ = store.put([unique(CHUNK_BYTES)])
    redis_client.hset(keys.blob_meta(digest), "size", 10)  # written by anyone on Redis
    worker = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=CHUNK_BYTES + 100)
    with pytest.raises(SourceFetchFailed, match="2 chunks of 1048576 bytes cannot hold 10 bytes"):
        next(worker.read(digest))
    # a record that matches its own lie, over chunks larger than the record says
    record = {**redis_client.hgetall(keys.blob_meta(digest)), b"size": CHUNK_BYTES + 100}
    redis_client.hset(keys.blob_meta(digest), mapping=record)
    redis_client.set(_chunk(redis_client, digest, 0), b"x" * 2 * CHUNK_BYTES)
    with pytest.raises(SourceFetchFailed, match=f"holds more than {CHUNK_BYTES} bytes"):
        next(worker.read(digest))
    redis_client.hset(keys.blob_meta(digest), mapping=record)  # forgotten once it failed
    redis_client.set(_chunk(redis_client, digest, 0), b"x" * CHUNK_BYTES)
    redis_client.set(_chunk(redis_client, digest, 1), b"x" * CHUNK_BYTES)
    with pytest.raises(InvalidInput, match="STI_UPLOAD_MAX_BYTES"):
        list(worker.read(digest))


def test_a_blob_stored_by_an_older_client_under_its_digest_is_read(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    data = unique(CHUNK_BYTES)
    digest = sha256(data)
    redis_client.set(keys.blob_chunk(digest, 0), data[:CHUNK_BYTES], ex=EXPIRES_S)
    redis_client.set(keys.blob_chunk(digest, 1), data[CHUNK_BYTES:], ex=EXPIRES_S)
    redis_client.hset(keys.blob_meta(digest), mapping={"size": len(data), "chunks": 2})
    assert store.has(digest)
    assert b"".join(store.read(digest)) == data


@pytest.mark.parametrize("name", ["sha256:" + "0" * 64, "../x", "upload:abc", "upload:" + "A" * 32])
def test_a_record_pointing_elsewhere_than_an_upload_is_refused(
    redis_client: redis.Redis, store: BlobStore, name: str
) -> None:
    digest, _ = store.put([unique()])
    redis_client.hset(keys.blob_meta(digest), "name", name)  # anyone on Redis can write one
    with pytest.raises(SourceFetchFailed, match="malformed record"):
        list(store.read(digest))


@pytest.mark.parametrize(
    ("field", "value"), [("chunks", "-1"), ("size", "1e9"), ("chunks", "9" * 40)]
)
def test_a_record_with_a_malformed_count_is_refused(
    redis_client: redis.Redis, store: BlobStore, field: str, value: str
) -> None:
    digest, _ = store.put([unique()])
    redis_client.hset(keys.blob_meta(digest), field, value)
    with pytest.raises(SourceFetchFailed, match=f"malformed {field}"):
        list(store.read(digest))


# uploads followed as they arrive


def test_an_upload_is_read_as_it_arrives_and_checked_at_the_end(
    redis_client: redis.Redis,
) -> None:
    store = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=8 * CHUNK_BYTES)
    data = unique(5 * CHUNK_BYTES)
    name = new_upload_name()
    store.begin(name, len(data))
    assert store.has(name) and store.size(name) == len(data) and store.digest_of(name) is None
    reader = store.read(name)
    arrived = threading.Event()

    def send() -> Iterator[bytes]:
        yield data[: 4 * CHUNK_BYTES]  # one round trip's worth
        assert arrived.wait(10), "the reader got nothing before the upload ended"
        yield data[4 * CHUNK_BYTES :]

    sender = threading.Thread(target=lambda: store.put(send(), upload=name))
    sender.start()
    first = next(reader)
    arrived.set()
    assert first + b"".join(reader) == data
    sender.join()
    assert store.digest_of(name) == sha256(data) and store.size(name) == len(data)
    assert b"".join(store.read(sha256(data))) == data  # the same chunks, by the digest
    assert b"".join(store.read(name)) == data  # and again by the name (a build run again)


def test_an_upload_that_fails_on_the_submitting_side_fails_its_reader(
    store: BlobStore,
) -> None:
    name = new_upload_name()
    store.begin(name, 10)
    reader = store.read(name)

    def send() -> Iterator[bytes]:
        yield b"x" * CHUNK_BYTES
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put(send(), upload=name)
    with pytest.raises(
        SourceFetchFailed, match="failed on the submitting side: the upload was int"
    ):
        list(reader)
    assert not store.has(name)
    with pytest.raises(SourceFetchFailed, match="failed on the submitting side"):
        store.size(name)


def test_an_upload_over_the_cap_fails_its_reader_with_the_cap(
    redis_client: redis.Redis,
) -> None:
    small = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=CHUNK_BYTES + 10)
    name = new_upload_name()
    small.begin(name, 10)
    with pytest.raises(InvalidInput, match="above the upload limit"):
        small.put([unique(2 * CHUNK_BYTES)], upload=name)
    with pytest.raises(SourceFetchFailed, match="above the upload limit"):
        list(small.read(name))


def test_a_reader_holds_its_cap_on_an_upload_whatever_the_uploader_does(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    name = new_upload_name()
    store.begin(name, 10)
    for index in range(3):  # a hostile uploader writes chunks past the reader's cap
        redis_client.set(keys.blob_chunk(name, index), b"x" * CHUNK_BYTES, ex=EXPIRES_S)
    worker = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=2 * CHUNK_BYTES)
    with pytest.raises(InvalidInput, match="STI_UPLOAD_MAX_BYTES"):
        list(worker.read(name))


def test_an_upload_that_stops_arriving_fails_after_the_stall_timeout(
    redis_client: redis.Redis,
) -> None:
    patient = BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=10**6, stall_s=0.3)
    name = new_upload_name()
    patient.begin(name, 10)
    redis_client.set(keys.blob_chunk(name, 0), b"first", ex=EXPIRES_S)
    reader = patient.read(name)
    assert next(reader) == b"first"
    with pytest.raises(SourceFetchFailed, match=r"stopped: nothing arrived for 0\.3s"):
        next(reader)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (
            {"state": "done", "digest": "sha256:" + "0" * 64, "chunks": 1, "size": 5},
            "does not match",
        ),
        ({"state": "done", "digest": "x", "chunks": 2, "size": CHUNK_BYTES + 5}, "incomplete"),
        ({"state": "done", "digest": "x", "chunks": "-2", "size": 5}, "malformed chunks"),
    ],
)
def test_a_hostile_upload_record_fails_its_reader(
    redis_client: redis.Redis, store: BlobStore, record: dict[str, object], error: str
) -> None:
    name = new_upload_name()
    redis_client.set(keys.blob_chunk(name, 0), b"first", ex=EXPIRES_S)
    redis_client.hset(keys.blob_meta(name), mapping=record)  # type: ignore[arg-type]
    with pytest.raises(SourceFetchFailed, match=error):
        list(store.read(name))


def test_an_upload_never_begun_is_not_stored(store: BlobStore) -> None:
    name = new_upload_name()
    assert not store.has(name) and store.size(name) is None
    with pytest.raises(SourceFetchFailed, match="not in the store"):
        list(store.read(name))


def test_an_upload_of_content_stored_already_keeps_its_chunks_for_its_readers(
    store: BlobStore,
) -> None:
    data = unique(CHUNK_BYTES)
    digest, _ = store.put([data])
    name = new_upload_name()
    store.begin(name, len(data))
    store.put([data], upload=name)
    assert b"".join(store.read(name)) == data
    assert store.digest_of(name) == digest


@pytest.mark.parametrize(
    "name", ["upload:", "upload:" + "0" * 31, "upload:" + "g" * 32, "upload:../" + "0" * 29, "x"]
)
def test_anything_but_a_digest_or_an_upload_name_is_refused(store: BlobStore, name: str) -> None:
    with pytest.raises(InvalidInput, match="neither a sha256"):
        check_blob(name)
    with pytest.raises(InvalidInput):
        store.has(name)
    with pytest.raises(InvalidInput):
        list(store.read(name))
