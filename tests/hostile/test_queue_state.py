"""The queue's state in Redis, as an attacker who can write to Redis and an operator whose
worker freezes would try it: forged blob records, tags spelt another way, stale attempts of a
build, garbage in a cancel flag or a claim. Against the session's redis-server."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sti import keys
from sti.blobstore import CHUNK_BYTES, BlobStore, new_upload_name
from sti.errors import InvalidInput, SourceFetchFailed
from sti_submit.upload import upload_source

EXPIRES_S = 600
MAX_BYTES = 4 * CHUNK_BYTES


@pytest.fixture
def redis_client(broker_url: str) -> Iterator[redis.Redis]:
    """The session's Redis (shared with other tests: keys of their own, nothing flushed)."""
    client = redis.Redis.from_url(broker_url)
    yield client
    client.close()


@pytest.fixture
def store(redis_client: redis.Redis) -> BlobStore:
    return BlobStore(redis_client, expires_s=EXPIRES_S, max_bytes=MAX_BYTES)


# the store of a client (or worker) of its own, in _bounded's process
_STORE = (
    "import redis; from sti.blobstore import BlobStore; "
    f"store = BlobStore(redis.Redis.from_url({{url!r}}), expires_s=600, max_bytes={MAX_BYTES})"
)


def _bounded(code: str, *, seconds: float = 30, memory: int = 1024**3) -> str:
    """Run code in a Python process of its own, capped in time and memory, and return what it
    printed: a hang that grows is cut there, not in the test run."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=seconds,
            preexec_fn=cap,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"still running after {seconds}s") from error
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


# a blob record's counts


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "app"
    source.mkdir()
    (source / "index.html").write_text(f"{uuid.uuid4().hex}\n")
    return source


def test_a_forged_chunk_count_does_not_hang_a_client_that_sends_the_same_content_again(
    redis_client: redis.Redis, broker_url: str, store: BlobStore, tmp_path: Path
) -> None:
    """The digest is in every build log; a huge `chunks` on it made sti-submit renew that many
    chunk keys before it would send the source again (one pipeline, growing without limit)."""
    source = _source(tmp_path)
    digest = upload_source(store, source).ref.blob
    redis_client.hset(keys.blob_meta(digest), "chunks", "9" * 15)
    sent = _bounded(
        f"""
        from pathlib import Path
        from sti_submit.upload import upload_source
        {_STORE.format(url=broker_url)}
        uploaded = upload_source(store, Path({str(source)!r}))
        print(uploaded.ref.blob, uploaded.sent)
        """
    )
    assert sent == f"{digest} True"  # the record was not trusted: the content was sent again
    assert redis_client.hget(keys.blob_meta(digest), "chunks") == b"1"
    assert b"".join(store.read(digest))


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        ("10", "9" * 15),  # more chunks than the size takes
        ("10", "0"),  # fewer
        (str(CHUNK_BYTES + 1), "1"),
        ("9" * 15, str(-(-(10**15 - 1) // CHUNK_BYTES))),  # consistent, beyond the cap
        ("abc", "1"),
        ("10", "-1"),
        ("10", "1e9"),
        ("10", " 1"),
        ("10", "+1"),
        ("10", "0x1"),
        ("\u0661\u0660", "1"),  # digits, but not ASCII ones
        ("10", "9" * 40),
    ],
)
def test_a_record_with_counts_put_could_not_have_written_is_not_stored(
    redis_client: redis.Redis, broker_url: str, store: BlobStore, size: str, chunks: str
) -> None:
    digest, _ = store.put([f"{uuid.uuid4().hex}\n".encode()])
    upload = new_upload_name()
    redis_client.hset(keys.blob_meta(digest), mapping={"size": size, "chunks": chunks})
    done = {"state": "done", "digest": digest, "size": size, "chunks": chunks}
    redis_client.hset(keys.blob_meta(upload), mapping=done)
    # has() is what a client resubmitting and a reaper deciding on a re-run ask
    found = _bounded(
        f"""
        {_STORE.format(url=broker_url)}
        print(store.has({digest!r}), store.has({upload!r}))
        """
    )
    assert found == "False False"
    for name in (digest, upload):
        with pytest.raises((SourceFetchFailed, InvalidInput)) as raised:
            store.size(name)
        message = str(raised.value)
        assert "\n" not in message
        assert "STI_UPLOAD_MAX_BYTES" in message or "malformed" in message, message
        with pytest.raises((SourceFetchFailed, InvalidInput)):
            next(store.read(name))


def test_a_size_of_abc_is_a_one_line_error_naming_it(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    digest, _ = store.put([f"{uuid.uuid4().hex}\n".encode()])
    redis_client.hset(keys.blob_meta(digest), "size", "abc")
    with pytest.raises(SourceFetchFailed, match=r"malformed size: b'abc'$"):
        store.size(digest)
    with pytest.raises(SourceFetchFailed, match=r"malformed size: b'abc'$"):
        next(store.read(digest))


def test_an_upload_followed_to_its_end_trusts_no_forged_count(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    name = new_upload_name()
    redis_client.set(keys.blob_chunk(name, 0), b"first", ex=EXPIRES_S)
    forged = {"state": "done", "digest": "sha256:" + "0" * 64, "size": "5", "chunks": "9" * 15}
    redis_client.hset(keys.blob_meta(name), mapping=forged)
    with pytest.raises(SourceFetchFailed, match="cannot hold 5 bytes"):
        list(store.read(name))
