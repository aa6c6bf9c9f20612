"""The queue's state in Redis, as an attacker who can write to Redis and an operator whose
worker freezes would try it: forged blob records, tags spelt another way, stale attempts of a
build, garbage in a cancel flag or a claim. Against the session's redis-server."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import redis
from celery import Celery

from sti import keys
from sti.blobstore import CHUNK_BYTES, BlobStore, new_upload_name
from sti.cancel_flags import CODES, cancel_requested, request_cancel
from sti.errors import Cancelled, InternalError, InvalidInput, SourceFetchFailed
from sti.leases import (
    MAX_CLAIMED_HOSTS,
    Attempt,
    HostSlots,
    RunningBuilds,
    TagLock,
    claimed_hosts,
    tags_locked_for,
)
from sti.model import BuildRequest, build_tag_for, normalized_tag
from sti.wire import host_queue
from sti_submit.client import StiClient
from sti_submit.upload import upload_source
from sti_worker.engine.docker_host import DockerHost, container_name
from sti_worker.engine.methods import base_reference
from sti_worker.engine.pipeline import (
    BuildState,
    Workbench,
    attempt_name,
    build_id_of,
    cleanup,
    cleanup_build,
    leftover_attempts,
    run_build,
    tag_step,
    workdir_for,
)
from sti_worker.engine.sources import Sources
from sti_worker.reaper import Reaper
from sti_worker.uploads import settled
from tests.dockertools import TRACKER
from tests.queue_helpers import make_source
from tests.services import RedisServer, Worker
from tests.test_engine_source_images import UNCHANGED as SOURCE_UNCHANGED
from tests.test_engine_source_images import _run as _build_source
from tests.test_engine_source_images import (  # noqa: F401 (fixtures)
    keeping_host,
    source_images,
)
from tests.unit.fake_docker import FakeDocker

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


def _uploaded(client: redis.Redis, content: bytes, record: dict[str, str]) -> str:
    """An upload another client made (its chunks, then the record it chose to write)."""
    name = new_upload_name()
    client.set(keys.blob_chunk(name, 0), content, ex=EXPIRES_S)
    client.hset(keys.blob_meta(name), mapping=record)
    client.expire(keys.blob_meta(name), EXPIRES_S)
    return name


def test_an_upload_whose_record_names_another_sources_digest_is_known_by_what_was_read(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    """A source image is named by the digest of its upload (source_images): an upload whose
    record named a victim's digest once made the victim's next build start from the attacker's
    copy (a record flipped during the copy), or the attacker's build from the victim's."""
    victim = store.put([b"the victim's source\n"])[0]
    mine = b"the attacker's source\n"
    honest = {"state": "done", "size": str(len(mine)), "chunks": "1"}
    upload = _uploaded(redis_client, mine, {**honest, "digest": victim})
    reference = f"sti+upload://{upload}/dir"
    settled_name = settled(lambda: store)
    assert settled_name(reference) is None  # known by content only once read here

    redis_client.hset(keys.blob_meta(upload), "digest", _digest_of(mine))  # flipped for the read
    assert b"".join(store.read(upload)) == mine
    redis_client.hset(keys.blob_meta(upload), "digest", victim)  # and back, after it
    assert settled_name(reference) == f"sti+upload://{_digest_of(mine)}/dir"


@pytest.mark.usefixtures("source_images")
def test_a_build_of_an_upload_naming_another_sources_digest_does_not_start_from_its_copy(
    request: pytest.FixtureRequest,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    store: BlobStore,
    redis_client: redis.Redis,
) -> None:
    """The victim's build leaves a copy of its source (a source image, named by its digest,
    which is in its build log); the attacker's upload, done in its record and naming that
    digest, once made the attacker's build start from the victim's copy."""
    host: DockerHost = request.getfixturevalue("keeping_host")  # BuildKit, copies kept
    victim = _source(tmp_path)
    first, _ = _build_source(host, store, victim, images["sti-fake"], app_tag)
    TRACKER.built(first.image_id)
    assert first.success, first.messages
    digest = upload_source(store, victim).ref.blob
    mine = b"not the victim's\n"
    record = {"state": "done", "digest": digest, "size": str(len(mine)), "chunks": "1"}
    upload = _uploaded(redis_client, mine, record)
    stolen, lines = _build_source(
        host, store, f"sti+upload://{upload}/dir", images["sti-fake"], app_tag
    )
    TRACKER.built(stolen.image_id)
    assert SOURCE_UNCHANGED not in lines
    assert not stolen.success, lines


def test_chunks_another_client_slips_into_an_upload_fail_the_build_that_reads_them(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    """An upload's name is in its build's log, and its chunks are anyone's to write: a chunk
    written ahead of the uploader (read before the uploader's overwrites it), or one past its
    end, reaches the reader, which fails at the end (the digest, the count) with nothing
    built from it."""
    ahead = new_upload_name()
    store.begin(ahead, 7)
    redis_client.set(keys.blob_chunk(ahead, 0), b"poison\n", ex=EXPIRES_S)
    reader = store.read(ahead)
    assert next(reader) == b"poison\n"
    store.put([b"victim\n"], upload=ahead)
    with pytest.raises(SourceFetchFailed, match="does not match its digest"):
        list(reader)
    past_the_end = new_upload_name()
    store.begin(past_the_end, 7)
    store.put([b"victim\n"], upload=past_the_end)
    redis_client.set(keys.blob_chunk(past_the_end, 1), b"poison\n", ex=EXPIRES_S)
    with pytest.raises(SourceFetchFailed, match="is incomplete"):
        list(store.read(past_the_end))
    assert store.digest_of(ahead) is None and store.digest_of(past_the_end) is None


def _digest_of(content: bytes) -> str:
    return f"sha256:{hashlib.sha256(content).hexdigest()}"


def test_a_chunk_too_large_to_be_one_is_refused_before_it_is_held(
    redis_client: redis.Redis, broker_url: str, store: BlobStore
) -> None:
    """A reader once took a chunk whole, whatever its size (Redis holds up to 512 MB in a
    key), before it counted it against the cap."""
    digest = store.put([f"{uuid.uuid4().hex}\n".encode()])[0]
    chunks = redis_client.hget(keys.blob_meta(digest), "name").decode()
    redis_client.set(keys.blob_chunk(chunks, 0), b"x" * (96 * CHUNK_BYTES), ex=EXPIRES_S)
    try:
        said = _bounded(
            f"""
            import re
            {_STORE.format(url=broker_url)}
            try:
                list(store.read({digest!r}))
            except Exception as error:
                print(error.code, error)
            # this program's peak (ru_maxrss would count the forking test process's)
            status = open("/proc/self/status").read()
            print(int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024)
            """
        )
    finally:
        redis_client.delete(keys.blob_chunk(chunks, 0))
    error, peak_mib = said.rsplit("\n", 1)
    assert error.startswith("SourceFetchFailed") and f"more than {CHUNK_BYTES} bytes" in error
    assert int(peak_mib) < 64, said


@pytest.mark.parametrize("kind", ["string", "list"])
def test_a_blob_record_of_another_type_is_not_stored_and_is_written_anew(
    redis_client: redis.Redis, broker_url: str, store: BlobStore, tmp_path: Path, kind: str
) -> None:
    """A record that is not a hash was a bare WRONGTYPE error: a traceback on the worker, a
    failed sti-submit on the laptop."""
    source = _source(tmp_path)
    digest = upload_source(store, source).ref.blob
    redis_client.delete(keys.blob_meta(digest))
    _write_as(redis_client, keys.blob_meta(digest), kind)
    with pytest.raises(SourceFetchFailed, match=f"record that is a {kind}, not a hash$"):
        store.size(digest)
    with pytest.raises(SourceFetchFailed, match=f"record that is a {kind}, not a hash$"):
        next(store.read(digest))
    sent = _bounded(  # sti-submit's own Redis client
        f"""
        from pathlib import Path
        from sti.blobstore import BlobStore
        from sti.redis_wire import LiteRedis
        from sti_submit.upload import upload_source
        store = BlobStore(LiteRedis({broker_url!r}), expires_s=600, max_bytes={MAX_BYTES})
        uploaded = upload_source(store, Path({str(source)!r}))
        print(uploaded.ref.blob, uploaded.sent)
        """
    )
    assert sent == f"{digest} True"
    assert b"".join(store.read(digest))


def test_a_chunk_of_another_type_is_a_one_line_error(
    redis_client: redis.Redis, store: BlobStore
) -> None:
    digest = store.put([f"{uuid.uuid4().hex}\n".encode()])[0]
    chunks = redis_client.hget(keys.blob_meta(digest), "name").decode()
    redis_client.delete(keys.blob_chunk(chunks, 0))
    _write_as(redis_client, keys.blob_chunk(chunks, 0), "list")
    with pytest.raises(SourceFetchFailed, match=r"chunk 0 is a list, not a string$"):
        list(store.read(digest))
    upload = _uploaded(redis_client, b"x", {"state": "open", "expected": "1"})
    redis_client.delete(keys.blob_chunk(upload, 0))
    _write_as(redis_client, keys.blob_chunk(upload, 0), "hash")
    with pytest.raises(SourceFetchFailed, match=r"chunk 0 is a hash, not a string$"):
        list(store.read(upload))


def _write_as(client: redis.Redis, key: str, kind: str) -> None:
    """A key of that type, as anyone on Redis can write one."""
    write = {
        "string": lambda: client.set(key, "garbage"),
        "list": lambda: client.rpush(key, "garbage"),
        "hash": lambda: client.hset(key, "garbage", "1"),
    }
    write[kind]()
    client.expire(key, EXPIRES_S)


def test_a_stored_blob_whose_content_fails_its_digest_is_forgotten_and_sent_again(
    redis_client: redis.Redis, store: BlobStore, tmp_path: Path
) -> None:
    """Chunks rewritten under a digest's record failed every build of that content, as
    sti-submit found it stored (and renewed it) each time: a record whose content fails is
    forgotten, so the next submission sends the content again."""
    source = _source(tmp_path)
    digest = upload_source(store, source).ref.blob
    chunks = redis_client.hget(keys.blob_meta(digest), "name").decode()
    stored = redis_client.get(keys.blob_chunk(chunks, 0))
    redis_client.set(keys.blob_chunk(chunks, 0), bytes(len(stored)), ex=EXPIRES_S)
    with pytest.raises(SourceFetchFailed, match="does not match its digest"):
        list(store.read(digest))
    assert not store.has(digest)
    assert upload_source(store, source).sent
    assert b"".join(store.read(digest)) == stored


# one build per tag, whatever its spelling


def _app() -> str:
    return f"acme/app-{uuid.uuid4().hex[:12]}"


def _lock(client: redis.Redis, tag: str, build_id: str, attempt: int = 1) -> TagLock:
    return TagLock.of_build(client, tag, Attempt(build_id, attempt), 60)


def _forget_locks(client: redis.Redis, *tags: str) -> None:
    client.delete(*(keys.tag_lock(locked) for tag in tags for locked in tags_locked_for(tag)))


@pytest.mark.parametrize(
    "spellings",
    [
        ["{app}", "{app}:latest", "docker.io/{app}", "index.docker.io/{app}:latest"],
        ["{x}", "{x}:latest", "library/{x}", "docker.io/library/{x}", "index.docker.io/{x}"],
        ["localhost:5000/{app}", "localhost:5000/{app}:latest"],
    ],
)
def test_every_spelling_of_a_tag_is_one_lock(
    redis_client: redis.Redis, spellings: list[str]
) -> None:
    names = {"app": _app(), "x": f"x{uuid.uuid4().hex[:12]}"}
    tags = [spelling.format(**names) for spelling in spellings]
    try:
        first = _lock(redis_client, tags[0], "build-first")
        assert first.acquire()
        for number, tag in enumerate(tags):
            other = _lock(redis_client, tag, f"build-{number}")
            assert not other.acquire(), f"{tag} was locked apart from {tags[0]}"
            assert other.holder() == "build-first"
        assert {normalized_tag(tag) for tag in tags} == {normalized_tag(tags[0])}
    finally:
        _forget_locks(redis_client, *tags)


def test_a_tag_and_the_build_tag_an_extended_build_of_another_tags_are_one_lock(
    redis_client: redis.Redis,
) -> None:
    app = _app()
    builder_result = f"docker.io/{app}-build:latest"  # what -R of acme/app tags, spelt long
    try:
        assert _lock(redis_client, app, "build-extended").acquire()
        assert not _lock(redis_client, builder_result, "build-plain").acquire()
    finally:
        _forget_locks(redis_client, app, builder_result)


@pytest.mark.parametrize(
    ("tag", "other"),
    [
        ("{app}", "{app}:v1"),  # another tag of the repository
        ("{app}", "registry-1.docker.io/{app}"),  # a name Docker files apart from docker.io's
        ("{app}", "Docker.io/{app}"),  # a registry host in capitals is another name to Docker
        ("{app}", "localhost/{app}"),
    ],
)
def test_other_tags_are_other_locks(redis_client: redis.Redis, tag: str, other: str) -> None:
    app = _app()
    tag, other = tag.format(app=app), other.format(app=app)
    try:
        assert _lock(redis_client, tag, "build-1").acquire()
        assert _lock(redis_client, other, "build-2").acquire()
    finally:
        _forget_locks(redis_client, tag, other)


@pytest.mark.parametrize(
    ("tag", "build_tag"),
    [
        ("acme/app", "acme/app-build"),
        ("acme/app:latest", "acme/app:latest-build"),
        ("docker.io/acme/app", "docker.io/acme/app-build"),
        ("acme/app:v1", "acme/app:v1-build"),
        ("localhost:5000/acme/app:latest", "localhost:5000/acme/app:latest-build"),
    ],
)
def test_the_build_tag_is_app_image_tag_build_as_spelled(tag: str, build_tag: str) -> None:
    assert build_tag_for(tag) == build_tag


@pytest.fixture
def untagged_image(api: docker.APIClient, images: dict[str, str]) -> Iterator[str]:
    """An image no tag names (another build's, between its steps), by its id."""
    container = api.create_container(images["sti-fake"], ["true"])
    try:
        image = api.commit(container, changes=[f"LABEL test.untagged={uuid.uuid4().hex}"])["Id"]
    finally:
        api.remove_container(container, force=True)
    yield image
    with contextlib.suppress(docker.errors.NotFound):
        api.remove_image(image, force=True)


def test_a_tag_spelt_as_another_images_id_takes_nothing_of_it(
    api: docker.APIClient,
    docker_host: DockerHost,
    images: dict[str, str],
    source: str,
    untagged_image: str,
) -> None:
    """Docker looks up a name that no image has (without a "/") as a prefix of an image's id:
    APP_IMAGE_TAG df2d9bfc608d named another image as the previous one, which the build saved
    artifacts from, and as the one it replaced (removed once tagged, unless something used
    it)."""
    tag = untagged_image.removeprefix("sha256:")[:12]
    lines: list[str] = []
    request = BuildRequest(source, images["sti-fake"], tag)
    try:
        result = run_build(docker_host, request, lines.append, "test")
        TRACKER.built(result.image_id)
        assert result.success, result.messages
        assert f"No previous image {tag}: clean build" in lines
        assert api.inspect_image(untagged_image)["Id"] == untagged_image
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_image(normalized_tag(tag))


@pytest.mark.parametrize(
    "tag", ["sha256:df2d9bfc608d", "docker.io/library/sha256:df2d9bfc608d", "library/sha256:x"]
)
def test_a_tag_named_as_image_ids_begin_is_refused_before_any_work(tag: str) -> None:
    """sha256:<hex> is an image id to Docker, which refuses to tag such a name: the build ran,
    incremental from the image whose id began so, and failed at its tag step."""
    with pytest.raises(InvalidInput, match="named sha256"):
        BuildRequest("https://git.example/app.git", "acme/builder", tag)


# a stale attempt: a worker frozen (or cut off) past its lease, whose build runs again


class _Claim:
    """What sti.build takes for one attempt of a build on a host (see tasks._claim), and what
    that attempt's worker does with it later."""

    def __init__(self, client: redis.Redis, build_id: str, tag: str, host_id: str) -> None:
        self.registry = RunningBuilds(client, 60)
        self.slots = HostSlots(client, host_id, 60)
        self.attempt = Attempt(build_id, self.registry.attempt_of(build_id))
        self.tag = tag
        self.lock = TagLock.of_build(client, tag, self.attempt, 60)
        self.slots.register_node(f"node-{uuid.uuid4().hex}", 4)
        assert self.slots.claim(build_id) and self.lock.acquire()
        started = self.registry.start(build_id, host_id, tag, 600, '{"source": "x"}')
        assert started == self.attempt.number

    def renew(self) -> list[bool]:
        attempt = self.attempt
        return [self.slots.renew(attempt), self.lock.renew(), self.registry.renew(attempt)]

    def release(self) -> None:
        """As the attempt's finish does: the running lease last (the attempt ends with it)."""
        self.slots.release(self.attempt)
        self.lock.release()
        self.registry.end(self.attempt)

    def holding(self) -> list[bool]:
        """Whether the slot, the tag's lock and the running lease are there, the build's."""
        build_id = self.attempt.build_id
        client = self.lock._client
        locked = client.get(keys.tag_lock(normalized_tag(self.tag)))
        return [
            build_id in self.slots.running(),
            locked == build_id.encode(),
            client.zscore(keys.RUNNING_BUILDS, build_id) is not None,
        ]


def _reap(client: redis.Redis, claim: _Claim, tag: str) -> int:
    """What a reaper does with a build whose lease ran out (tasks.end_lost_build): take it,
    free what its attempt held, run it again as the next attempt."""
    build_id = claim.attempt.build_id
    client.zadd(keys.RUNNING_BUILDS, {build_id: 1})  # as if it ran out long ago
    assert claim.registry.take_expired(build_id)
    taken = Attempt(build_id, claim.attempt.number, taken=True)
    claim.slots.release(taken)
    TagLock.of_build(client, tag, taken, 60).release()
    claim.registry.end(taken)
    return claim.registry.rerun(build_id)


@pytest.fixture
def build(redis_client: redis.Redis) -> Iterator[tuple[str, str, str]]:
    """A build id, a tag and a host of their own; what the test left in Redis goes after."""
    build_id, tag, host_id = uuid.uuid4().hex, _app(), f"host-{uuid.uuid4().hex[:8]}"
    yield build_id, tag, host_id
    redis_client.zrem(keys.RUNNING_BUILDS, build_id)
    redis_client.delete(
        keys.build_claim(build_id),
        keys.host_running(host_id),
        keys.host_nodes(host_id),
        keys.host_slots(host_id),
    )
    _forget_locks(redis_client, tag)


def test_a_stale_attempt_neither_renews_nor_releases_what_the_new_attempt_holds(
    redis_client: redis.Redis, build: tuple[str, str, str]
) -> None:
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    assert first.renew() == [True, True, True]
    assert _reap(redis_client, first, tag) == 2
    second = _Claim(redis_client, build_id, tag, host_id)  # on the same host: the worst case
    assert second.attempt.number == 2
    # the frozen worker wakes up and finishes: it owns nothing, and releases nothing
    assert first.renew() == [False, False, False]
    first.release()
    assert second.holding() == [True, True, True]
    assert second.renew() == [True, True, True]
    assert not _lock(redis_client, f"docker.io/{tag}:latest", uuid.uuid4().hex).acquire()
    second.release()
    assert second.holding() == [False, False, False]


def test_an_attempt_taken_for_lost_owns_nothing_before_the_build_runs_again(
    redis_client: redis.Redis, build: tuple[str, str, str]
) -> None:
    """Between the reaper's take and the next attempt's claim (or after a build ended
    WorkerLost), the attempt that was taken cannot renew its way back."""
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    redis_client.zadd(keys.RUNNING_BUILDS, {build_id: 1})
    assert first.registry.take_expired(build_id)
    assert first.renew()[2] is False
    assert redis_client.zscore(keys.RUNNING_BUILDS, build_id) is None


def test_a_running_attempt_whose_claim_redis_lost_keeps_its_build(
    redis_client: redis.Redis, build: tuple[str, str, str]
) -> None:
    """A Redis restarted without its data: nothing says another attempt owns the build."""
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    redis_client.delete(keys.build_claim(build_id))
    assert first.renew() == [True, True, True]
    first.release()
    assert first.holding() == [False, False, False]


@pytest.mark.parametrize(
    "value",
    ["abc", "", "0", "-1", "1.0", " 1", "\u0661", "3", "999", "1000", "9" * 40, "2\nforged"],
)
def test_a_claim_attempt_sti_never_writes_is_not_trusted(
    redis_client: redis.Redis, build: tuple[str, str, str], value: str
) -> None:
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    redis_client.hset(keys.build_claim(build_id), "attempt", value)
    with pytest.raises(InternalError) as raised:
        first.registry.attempt_of(build_id)
    assert repr(value) in raised.value.message and "\n" not in raised.value.message
    # no attempt owns the build now: what it holds runs out, then a reaper ends it
    assert first.renew() == [False, False, False]
    first.release()
    assert first.holding() == [True, True, True]
    redis_client.zadd(keys.RUNNING_BUILDS, {build_id: 1})
    assert first.registry.take_expired(build_id)


def test_a_tag_lock_that_ran_out_is_taken_again_unless_another_build_took_it(
    redis_client: redis.Redis, build: tuple[str, str, str]
) -> None:
    """A worker stopped past its lease (frozen by a long line, SIGSTOP, a clock ahead of
    Redis's): its tag's lock ran out while its running lease held, another build of the tag
    took the lock, and both built and tagged. A renewal now says the lock is another's, and
    takes again one nobody took."""
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    locks = [keys.tag_lock(locked) for locked in tags_locked_for(tag)]
    redis_client.delete(*locks)  # as if they ran out
    other = _lock(redis_client, f"docker.io/{tag}:latest", uuid.uuid4().hex)
    assert other.acquire()
    assert not first.lock.renew()
    assert first.lock.holder() == other._attempt.build_id
    other.release()
    redis_client.set(locks[0], build_id)  # one of them ran out, nobody took it
    assert first.lock.renew()
    assert [redis_client.get(lock) for lock in locks] == [build_id.encode()] * 2
    assert all(redis_client.pttl(lock) > 0 for lock in locks)


def test_an_attempt_that_ended_owns_nothing(
    redis_client: redis.Redis, build: tuple[str, str, str]
) -> None:
    """A copy of a step of a build that ended (delivered again, or a captured message sent
    again with a task id of its own) owned the build still: it ran, tagged outside the tag's
    lock, and stored a second result. An attempt's end is the last thing it does."""
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    first.slots.release(first.attempt)
    first.lock.release()
    assert first.registry.end(first.attempt)
    assert not first.registry.end(first.attempt)  # an sti.abort racing the finish: once
    assert first.renew() == [False, False, False]
    assert first.holding() == [False, False, False]
    assert first.registry.is_over(first.attempt)
    assert _lock(redis_client, tag, uuid.uuid4().hex).acquire()  # another build of the tag
    assert not first.lock.acquire()


def test_an_attempt_a_reaper_took_is_over_and_the_next_one_is_not(
    redis_client: redis.Redis, build: tuple[str, str, str]
) -> None:
    """A copy of sti.build delivered late (after its build ended, or ran again) has nothing to
    claim: it once retried its claim every second, for ever, or built again."""
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    assert not first.registry.is_over(first.attempt)
    _reap(redis_client, first, tag)
    assert first.registry.is_over(first.attempt)
    second = _Claim(redis_client, build_id, tag, host_id)
    assert not second.registry.is_over(second.attempt)


def test_each_stage_of_an_attempt_begins_once_in_order(
    redis_client: redis.Redis, build: tuple[str, str, str]
) -> None:
    """A sealed state is the input of one stage: sent again with a task id of its own (a
    captured message), or by a chain made twice (a copy of sti.build), it ran that stage a
    second time, alongside the first, under the same names."""
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    registry, attempt = first.registry, first.attempt
    assert registry.begin_stage(attempt, 0, "task-a")
    assert registry.begin_stage(attempt, 0, "task-a")  # the same message, delivered again
    assert not registry.begin_stage(attempt, 0, "task-copy")
    assert registry.begin_stage(attempt, 1, "task-b")
    assert not registry.begin_stage(attempt, 0, "task-a")  # a copy of the first, late
    assert not registry.begin_stage(attempt, 1, "task-copy")
    assert registry.begin_stage(attempt, 2, "task-c")
    _reap(redis_client, first, tag)
    assert not registry.begin_stage(attempt, 3, "task-d")  # a reaper took the attempt
    second = _Claim(redis_client, build_id, tag, host_id)
    assert registry.begin_stage(second.attempt, 0, "task-e")  # the next attempt's chain
    second.release()
    assert not registry.begin_stage(second.attempt, 1, "task-f")
    redis_client.hset(keys.build_claim(build_id), "stage.2", "garbage")
    assert not registry.begin_stage(second.attempt, 1, "task-f")


@pytest.mark.parametrize(
    ("stage", "steps", "finish"),
    [
        (0, ["fetch_source", "check_images", "save_artifacts", "build"], True),
        (0, ["fetch_source", "check_images", "save_artifacts", "build", "deploy", "tag"], True),
        (1, ["deploy", "tag"], False),
        (1, ["tag"], True),
        (2, ["deploy", "tag"], True),
        (-1, ["deploy", "tag"], True),
    ],
)
def test_a_state_is_refused_with_steps_other_than_its_stages(
    stage: int, steps: list[str], finish: bool
) -> None:
    """The steps and finish travel beside the sealed state, as anyone writes them: a stage's
    state given finish=True stored a successful result of a build that tagged nothing."""
    from sti_worker.tasks import _check_stage

    request = BuildRequest("https://git.example/app.git", "acme/builder", _app(), runtime_image="x")
    with pytest.raises(InvalidInput, match="are not stage"):
        _check_stage(BuildState(request, "host-a", stage=stage), steps, finish)
    _check_stage(BuildState(request, "host-a", stage=1), ["deploy", "tag"], True)


@pytest.mark.parametrize("kind", ["string", "list"])
def test_a_claim_of_another_type_is_not_trusted(
    redis_client: redis.Redis, build: tuple[str, str, str], kind: str
) -> None:
    """It was a bare WRONGTYPE at every renewal, claim and take of the build."""
    build_id, tag, host_id = build
    first = _Claim(redis_client, build_id, tag, host_id)
    redis_client.delete(keys.build_claim(build_id))
    _write_as(redis_client, keys.build_claim(build_id), kind)
    with pytest.raises(InternalError, match=f"claim in Redis is a {kind}, not a hash$"):
        first.registry.attempt_of(build_id)
    with pytest.raises(InternalError, match=f"claim in Redis is a {kind}, not a hash$"):
        first.registry.claim_of(build_id)
    assert first.renew() == [False, False, False]  # no attempt owns it: its leases run out
    first.release()
    assert not _lock(redis_client, tag, build_id).acquire()
    redis_client.zadd(keys.RUNNING_BUILDS, {build_id: 1})
    assert first.registry.take_expired(build_id)


@pytest.fixture
def registry_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A database of its own: no worker's reaper sees what a test writes in its registry."""
    client = redis.Redis.from_url(redis_server.url(8))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_a_running_builds_entry_that_names_no_build_is_dropped_and_ends_nothing(
    registry_client: redis.Redis,
) -> None:
    """Anyone can add a member to the registry of running builds: a reaper ended each one as a
    build (a result, a log, a cancel flag under whatever key it spelt), however many."""
    lost = uuid.uuid4().hex
    RunningBuilds(registry_client, 60).start(lost, "host-a", _app(), 60, '{"source": "x"}')
    forged = ["x", "../../etc", "0" * 31, lost.upper(), f"{lost}\nforged"]
    registry_client.zadd(keys.RUNNING_BUILDS, {member: 1 for member in [lost, *forged]})
    ended: list[str] = []
    reaper = Reaper(lambda: RunningBuilds(registry_client, 60), ended.append, 0)
    assert reaper.reap() == [lost]
    assert ended == [lost]
    assert registry_client.zcard(keys.RUNNING_BUILDS) == 0


def test_a_build_that_cannot_be_ended_does_not_keep_the_reaper_from_the_others(
    registry_client: redis.Redis,
) -> None:
    """One build whose end failed (a claim nobody could read) stopped the reaper's round, and
    the builds after it in the registry waited for the next round, which began with it again."""
    builds = sorted(uuid.uuid4().hex for _ in range(3))
    for build_id in builds:
        RunningBuilds(registry_client, 60).start(build_id, "host-a", _app(), 60, "{}")
    registry_client.zadd(keys.RUNNING_BUILDS, {build_id: 1 for build_id in builds})
    ended: list[str] = []

    def end(build_id: str) -> None:
        if build_id == builds[0]:
            raise InternalError("no such thing")
        ended.append(build_id)

    reaper = Reaper(lambda: RunningBuilds(registry_client, 60), end, 0)
    assert reaper.reap() == builds[1:]
    assert ended == builds[1:]


def test_the_hosts_a_claim_names_are_host_ids_and_few(registry_client: redis.Redis) -> None:
    """A build's claim names the hosts it ran on, which its end sends sti.cleanup to (a queue
    each, sti.host.<host id>): anyone can write there a million of them, or any name."""
    build_id = uuid.uuid4().hex
    registry = RunningBuilds(registry_client, 60)
    forged = ",".join(["host-b", "x\ny", "../q", "", "a" * 200, *(f"h{n}" for n in range(100))])
    registry_client.hset(keys.build_claim(build_id), "hosts", forged)
    assert registry.start(build_id, "host-a", _app(), 60, "{}") == 1
    hosts = claimed_hosts(registry.claim_of(build_id))
    assert "host-a" in hosts and len(hosts) <= MAX_CLAIMED_HOSTS  # the host claiming it
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", host) for host in hosts)
    assert registry.claim_of(build_id)["hosts"] == ",".join(hosts)


@pytest.mark.parametrize("offered", ["abc", "-1", "1e9", " 2", "2.5", "\u0662", "4097", "9" * 40])
def test_a_node_offering_slots_sti_never_writes_offers_none(
    registry_client: redis.Redis, offered: str
) -> None:
    """Each node's slots are a hash anyone can write: a count that is not a number failed
    every claim on the host (a bare script error: sti.build a Celery FAILURE), and sti-submit
    workers with a ValueError."""
    slots = HostSlots(registry_client, "host-a", 60)
    slots.register_node("node-a", 1)
    slots.register_node("node-b", 1)
    registry_client.hset(keys.host_slots("host-a"), "node-b", offered)
    assert slots.live_nodes() == {"node-a": 1, "node-b": 0}
    assert slots.claim(uuid.uuid4().hex)
    assert not slots.claim(uuid.uuid4().hex)  # node-a's one slot is taken


def test_a_hosts_slots_of_another_type_fail_a_claim_in_one_line(
    registry_client: redis.Redis,
) -> None:
    slots = HostSlots(registry_client, "host-a", 60)
    slots.register_node("node-a", 1)
    _write_as(registry_client, keys.host_running("host-a"), "hash")
    with pytest.raises(InternalError, match="build slots of host host-a in Redis are not of the"):
        slots.claim(uuid.uuid4().hex)


def test_the_start_up_sweep_takes_the_attempts_that_do_not_run(
    registry_client: redis.Redis,
) -> None:
    """A worker starting removes what crashed builds left on its host: it took every attempt
    of a build that ran anywhere for live (attempt 1's leftovers stayed while attempt 2 ran),
    and looked up the running builds of every host anyone named in sti:hosts."""
    from sti_worker.hooks import stale_attempts

    rerun, ended, garbage, unknown = (uuid.uuid4().hex for _ in range(4))
    for build_id in (rerun, ended, garbage):
        registry_client.xadd(keys.log_stream(build_id), {"line": "a build of this queue"})
    first = _Claim(registry_client, rerun, _app(), "host-a")
    _reap(registry_client, first, first.tag)
    _Claim(registry_client, rerun, first.tag, "host-a")  # attempt 2 runs
    over = _Claim(registry_client, ended, _app(), "host-a")
    over.release()
    _Claim(registry_client, garbage, _app(), "host-a")
    registry_client.hset(keys.build_claim(garbage), "attempt", "x")
    registry_client.sadd(keys.HOSTS, *(f"forged-{n}" for n in range(1000)))
    names = [rerun, attempt_name(rerun, 2), ended, garbage, unknown]
    assert stale_attempts(registry_client, names) == sorted([rerun, ended, garbage])


@pytest.fixture
def own_tmpdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Work dirs (TMPDIR/sti-<attempt name>) go in this test's own directory."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


@pytest.fixture
def two_attempts(own_tmpdir: Path) -> tuple[str, FakeDocker]:
    """A build id, and an engine with what its attempts 1 and 2 made on one host."""
    build_id = uuid.uuid4().hex
    fake = FakeDocker()
    for number in (1, 2):
        name = attempt_name(build_id, number)
        fake.add_container(container_name(name, "build-prepare"))
        fake.references[base_reference(name, "build")] = "sha256:builder"
        fake.add_image(f"sha256:layer-{number}", name)
        workdir_for(name).mkdir()
    return build_id, fake


def test_a_stale_attempts_cleanup_touches_nothing_of_the_new_attempt(
    two_attempts: tuple[str, FakeDocker],
) -> None:
    build_id, fake = two_attempts
    second = attempt_name(build_id, 2)
    request = BuildRequest("https://git.example/app.git", "acme/builder", _app(), build_id=build_id)
    stale = BuildState(request, "host-a", attempt=1, image_id="sha256:layer-1")

    cleanup(fake.as_host(), stale)

    assert sorted(fake.containers) == [container_name(second, "build-prepare")]
    assert sorted(fake.references) == [base_reference(second, "build")]
    assert sorted(fake.labels) == ["sha256:layer-2"]
    assert not workdir_for(build_id).exists() and workdir_for(second).exists()
    # what stops a build (a cancel) finds containers by the same name
    assert not container_name(second, "x").startswith(container_name(build_id, ""))


def test_the_new_attempt_and_sti_cleanup_remove_every_earlier_attempt(
    two_attempts: tuple[str, FakeDocker], own_tmpdir: Path
) -> None:
    build_id, fake = two_attempts
    for number in (1, 2):
        cleanup_build(fake.as_host(), attempt_name(build_id, number))
    assert fake.containers == {} and fake.references == {} and fake.labels == {}
    assert list(own_tmpdir.iterdir()) == []


@pytest.mark.parametrize("name", ["..", "x", "0" * 32 + ".1", "0" * 32 + ".02", "0" * 32 + "/2"])
def test_an_attempt_name_is_a_build_id_and_a_later_attempt_number(name: str) -> None:
    with pytest.raises(InvalidInput):
        workdir_for(name)


def test_a_stale_attempt_tags_nothing_and_asks_right_before_tagging() -> None:
    fake = FakeDocker()
    tag = _app()
    fake.add_image("sha256:old", "an-earlier-build", tag)
    request = BuildRequest("https://git.example/app.git", "acme/builder", tag)
    state = BuildState(request, "host-a", image_id="sha256:new")
    asked_after: list[int] = []

    def check_may_tag(refused: InternalError | None) -> Callable[[], None]:
        def check() -> None:
            asked_after.append(len(fake.calls))
            if refused:
                raise refused

        return check

    refused = InternalError("this one tags nothing")
    stale = Workbench(fake.as_host(), Sources(), lambda line: None, check_may_tag(refused))
    with pytest.raises(InternalError, match="tags nothing"):
        tag_step(stale, state)
    assert fake.references[tag] == "sha256:old"
    assert [call for call, _ in fake.calls if call == "tag"] == []

    fake.calls.clear()
    current = Workbench(fake.as_host(), Sources(), lambda line: None, check_may_tag(None))
    assert tag_step(current, state).tagged
    assert fake.calls[asked_after[-1]][0] == "tag"  # nothing between the question and the tag


# a cancel flag sti never wrote


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage",
        b"",
        b"null",
        b"[]",
        b"5",
        b'"Cancelled"',
        b'{"code": "Cancelled"}',
        b'{"code": "BuildFailed", "message": "the build ran and failed"}',
        b'{"code": "StiError", "message": "x"}',
        b'{"code": 5, "message": "x"}',
        b'{"code": "Cancelled", "message": "x\\nBuild abc succeeded"}',
        b'{"code": "Cancelled", "message": ""}',
        b'{"code": "Cancelled", "message": 7}',
        b'{"code": "Cancelled", "message": "' + b"x" * 2000 + b'"}',
        b"\xff\xfe{",
    ],
)
def test_a_cancel_flag_sti_never_writes_cancels_saying_what_it_held(
    redis_client: redis.Redis, raw: bytes
) -> None:
    build_id = uuid.uuid4().hex
    redis_client.set(keys.cancel_flag(build_id), raw, ex=60)
    error = cancel_requested(redis_client, build_id)
    assert type(error) is Cancelled
    assert error.message.startswith("the build was cancelled by a cancel flag sti never writes")
    assert repr(raw[:100]) in error.message and "\n" not in error.message


@pytest.mark.parametrize("kind", ["list", "hash"])
def test_a_cancel_flag_of_another_type_cancels_saying_so(
    redis_client: redis.Redis, kind: str
) -> None:
    """It was a bare WRONGTYPE: a claim that failed as a Celery FAILURE, a watcher that logged
    it twice a second and never cancelled."""
    build_id = uuid.uuid4().hex
    _write_as(redis_client, keys.cancel_flag(build_id), kind)
    error = cancel_requested(redis_client, build_id)
    assert type(error) is Cancelled
    assert error.message == f"the build was cancelled by a cancel flag sti never writes: a {kind}"


def test_a_cancel_flag_too_long_to_be_one_is_not_read_whole(
    redis_client: redis.Redis, broker_url: str
) -> None:
    """The watcher reads the flag twice a second while a step runs: a 96 MiB value was read
    whole each time (and decoded, for JSON)."""
    build_id = uuid.uuid4().hex
    redis_client.set(keys.cancel_flag(build_id), b'{"code": "' + b"x" * (96 << 20), ex=60)
    said = _bounded(
        f"""
        import re, redis
        from sti.cancel_flags import cancel_requested
        print(cancel_requested(redis.Redis.from_url({broker_url!r}), {build_id!r}).message)
        status = open("/proc/self/status").read()
        print(int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) // 1024)
        """
    )
    redis_client.delete(keys.cancel_flag(build_id))
    message, peak_mib = said.rsplit("\n", 1)
    shown = repr(b'{"code": "' + b"x" * 90)
    assert message == f"the build was cancelled by a cancel flag sti never writes: {shown}"
    assert int(peak_mib) < 64, said


@pytest.mark.parametrize("code", sorted(CODES))
def test_a_cancel_flag_sti_writes_ends_the_build_with_its_error(
    redis_client: redis.Redis, code: str
) -> None:
    build_id = uuid.uuid4().hex
    request_cancel(redis_client, build_id, code, "stop\nBuild x succeeded\x1b[2K", 60)
    error = cancel_requested(redis_client, build_id)
    assert error is not None and error.code == code
    assert error.message == "stop Build x succeeded [2K"  # one line, whatever it was given


def test_a_cancel_with_a_code_sti_does_not_end_builds_with_is_refused(
    redis_client: redis.Redis,
) -> None:
    build_id = uuid.uuid4().hex
    with pytest.raises(InvalidInput, match="'BuildFailed'"):
        request_cancel(redis_client, build_id, "BuildFailed", "x", 60)
    assert cancel_requested(redis_client, build_id) is None


class _ContainerNames:
    def __init__(self, *names: str) -> None:
        self.names = names

    def container_names(self, prefix: str) -> list[str]:
        return [name for name in self.names if name.startswith(prefix)]


def test_what_a_crashed_attempt_left_is_found_by_its_name(own_tmpdir: Path) -> None:
    """The worker's start-up sweep (hooks) removes the leftovers of every attempt whose build
    no live lease owns."""
    first, other = uuid.uuid4().hex, uuid.uuid4().hex
    second = attempt_name(first, 2)
    workdir_for(second).mkdir()
    (own_tmpdir / f"sti-{first}.1").mkdir()  # no attempt's name: never touched
    engine = _ContainerNames(container_name(first, "extract"), container_name(other, "source"))
    found = leftover_attempts(engine)  # type: ignore[arg-type]
    assert found == {first, second, other}
    assert {build_id_of(name) for name in found} == {first, other}


# real workers: an operator's worker that freezes, garbage written into a running build's state

LEASE_S = 3


def _queue_url(server: RedisServer, db: int) -> Iterator[str]:
    """A database of its own: no other test's worker takes these builds, no other reaper sees
    them."""
    url = server.url(db)
    yield url
    redis.Redis.from_url(url).flushdb()


@pytest.fixture
def frozen_queue(redis_server: RedisServer) -> Iterator[str]:
    yield from _queue_url(redis_server, 11)


@pytest.fixture
def short_lease_queue(redis_server: RedisServer) -> Iterator[str]:
    yield from _queue_url(redis_server, 10)


def _worker(url: str, host: str, log_dir: Path) -> Worker:
    return Worker(url, host, log_dir, STI_LEASE_SECONDS=str(LEASE_S))


def _slow(tmp_path: Path, images: dict[str, str], tag: str, sleep_s: int) -> BuildRequest:
    source = make_source(tmp_path / uuid.uuid4().hex)
    slow = images["sti-fake-slow"]
    # -m run: prepare is a container named for the attempt, which a stale cleanup once removed
    return BuildRequest(str(source), slow, tag, method="run", env={"SLEEP": str(sleep_s)})


def _until(lines: Iterator[str], text: str) -> str:
    for line in lines:
        if text in line:
            return line
    raise AssertionError(f"the build's log ended without {text!r}")


def _left_of(api: docker.APIClient, build_id: str) -> list[str]:
    left = [c["Names"][0] for c in api.containers(all=True) if build_id in c["Names"][0]]
    return left + [str(path) for path in Path(tempfile.gettempdir()).glob(f"sti-{build_id}*")]


def test_a_frozen_worker_that_wakes_up_after_its_build_ran_again_disturbs_nothing(
    frozen_queue: str, api: docker.APIClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    """The worker stops (SIGSTOP: as a long line once froze it) in prepare, longer than its
    lease; the build runs again on another host; the frozen worker goes on while attempt 2 is
    in its prepare. It used to tag its own image, remove attempt 2's prepare container, free
    its tag lock and store its own result."""
    client = StiClient(frozen_queue)
    frozen = _worker(frozen_queue, "frozen-host", tmp_path)
    other = None
    try:
        build_id = client.submit_build(_slow(tmp_path, images, app_tag, sleep_s=8))
        lines = iter(client.follow(build_id, deadline=time.monotonic() + 120))
        _until(lines, "prepare: started")
        os.killpg(frozen.process.pid, signal.SIGSTOP)
        try:
            other = _worker(frozen_queue, "other-host", tmp_path)
            _until(lines, "building it again from the start (attempt 2)")
            _until(lines, "prepare: started")
        finally:
            os.killpg(frozen.process.pid, signal.SIGCONT)
        result = client.wait(build_id, timeout=120)
        assert result.success, result.messages
        assert result.host == "other-host"
        assert api.inspect_image(app_tag)["Id"] == result.image_id
        log = list(client.follow(build_id, follow=False))
        assert sum(" succeeded: " in line for line in log) == 1, log
        assert not any(line.startswith("Tagged image") and "frozen" in line for line in log)
        locks = [keys.tag_lock(tag) for tag in tags_locked_for(app_tag)]
        assert client.redis.exists(*locks) == 0  # attempt 2 let its locks go, nobody else
        deadline = time.monotonic() + 30  # the frozen attempt's own cleanup, as it ends
        while _left_of(api, build_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _left_of(api, build_id) == []
    finally:
        client.close()
        for worker in (frozen, other):
            if worker is not None:
                worker.stop()


@pytest.mark.parametrize(
    ("forge", "said"),
    [
        (lambda r, key: r.hset(key, "attempt", "abc"), "attempt sti never writes: 'abc'"),
        (lambda r, key: r.delete(key) + r.set(key, "garbage"), "claim in Redis is a string"),
    ],
)
def test_a_garbage_claim_of_a_running_build_ends_it_in_one_line(
    short_lease_queue: str,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    forge: Callable[[redis.Redis, str], object],
    said: str,
) -> None:
    """Its worker no longer owns the build (nothing it renews is renewed), the reaper ends it
    with an error naming the value, and the worker serves the next build. A claim of another
    type was a bare WRONGTYPE at each renewal and at the reaper, which never ended the build."""
    client = StiClient(short_lease_queue)
    worker = _worker(short_lease_queue, "state-host", tmp_path)
    try:
        build_id = client.submit_build(_slow(tmp_path, images, app_tag, sleep_s=60))
        _until(iter(client.follow(build_id, deadline=time.monotonic() + 60)), "prepare: started")
        forge(redis.Redis.from_url(short_lease_queue), keys.build_claim(build_id))
        result = client.wait(build_id, timeout=45)
        assert result.error is not None and result.error["code"] == "InternalError", result
        assert said in result.error["message"]
        assert "\n" not in result.error["message"]
        after = BuildRequest(str(make_source(tmp_path / "next")), images["sti-fake"], app_tag)
        assert client.wait(client.submit_build(after), timeout=60).success
        assert worker.process.poll() is None
    finally:
        client.close()
        worker.stop()


def test_a_garbage_cancel_flag_cancels_the_build_naming_what_it_held(
    worker: Worker, client: StiClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    build_id = client.submit_build(_slow(tmp_path, images, app_tag, sleep_s=60))
    _until(iter(client.follow(build_id, deadline=time.monotonic() + 60)), "prepare: started")
    client.redis.set(keys.cancel_flag(build_id), b"{not json", ex=600)
    result = client.wait(build_id, timeout=45)
    assert result.error is not None and result.error["code"] == "Cancelled", result
    assert result.error["message"].endswith("never writes: b'{not json'")


def test_a_garbage_attempt_in_the_claim_of_a_build_not_yet_claimed_ends_it_in_one_line(
    worker: Worker, client: StiClient, images: dict[str, str], app_tag: str, tmp_path: Path
) -> None:
    request = BuildRequest(str(make_source(tmp_path)), images["sti-fake"], app_tag)
    client.redis.hset(keys.build_claim(request.build_id), "attempt", "1e3")
    client.redis.expire(keys.build_claim(request.build_id), 600)
    result = client.wait(client.submit_build(request), timeout=60)
    assert result.error is not None and result.error["code"] == "InternalError", result
    assert result.error["message"].endswith("attempt sti never writes: '1e3'")


# captured messages sent again: a copy of a step of a build that ended, a late sti.build


@pytest.fixture
def replay_queue(redis_server: RedisServer) -> Iterator[str]:
    yield from _queue_url(redis_server, 6)


@pytest.fixture
def attacker(replay_queue: str) -> Iterator[Celery]:
    app = Celery("attacker", broker=replay_queue, backend=replay_queue)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    yield app
    app.close()


def _handled(worker: Worker, task: str, task_id: str, times: int = 1) -> str:
    """The worker's log line saying how it ended the task (succeeded, ignored, raised...) the
    times-th time it got a message with that id."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = worker.log().splitlines()
        ended = [line for line in lines if f"{task}[{task_id}]" in line and "received" not in line]
        if len(ended) >= times:
            return ended[times - 1]
        time.sleep(0.2)
    raise AssertionError(f"{task}[{task_id}] not handled {times} times:\n{worker.log()[-3000:]}")


def _whole_log(url: str, build_id: str) -> list[str]:
    """Every line of the build's log, those after its end included (a follower stops there)."""
    entries = redis.Redis.from_url(url).xrange(keys.log_stream(build_id))
    return [fields[b"line"].decode() for _, fields in entries if b"line" in fields]


def _captured_states(url: str) -> list[dict[str, str]]:
    """The sealed states of the sti.step messages being run, as anyone on Redis reads them:
    kombu keeps each message a worker took, whole, until it is acknowledged (late acks)."""
    found = []
    for raw in redis.Redis.from_url(url).hvals("unacked"):
        message = json.loads(raw)[0]
        if message["headers"]["task"] == "sti.step":
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            found.append(args[0])
    return found


def _until_captured(url: str, lines: Iterator[str]) -> dict[str, str]:
    """The second stage's state (deploy, tag), captured while the deploy runs."""
    _until(lines, "Deploying the build output")
    _until(lines, "prepare: started")
    (captured,) = _captured_states(url)
    return captured


def test_a_captured_step_sent_again_after_its_build_ended_does_nothing(
    replay_queue: str,
    attacker: Celery,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """An extended build's first stage passes a sealed state to the second (deploy, tag):
    sent again with a task id of its own after the build ended (and after a newer image took
    the tag), it deployed and tagged again, outside the tag's lock, and stored a second
    result."""
    client = StiClient(replay_queue)
    worker = _worker(replay_queue, "replay-host", tmp_path)
    try:
        request = BuildRequest(
            str(make_source(tmp_path)),
            images["sti-fake-builder"],
            app_tag,
            runtime_image=images["sti-fake-slow"],
            method="run",
            env={"SLEEP": "1"},
        )
        client.submit_build(request)
        lines = iter(client.follow(request.build_id, deadline=time.monotonic() + 120))
        captured = _until_captured(replay_queue, lines)
        result = client.wait(request.build_id, timeout=120)
        assert result.success, result.messages
        api.tag(images["sti-fake"], app_tag)  # a newer build's image, say
        newer = api.inspect_image(app_tag)["Id"]
        task_id = uuid.uuid4().hex
        attacker.send_task(
            "sti.step",
            args=[captured],
            kwargs={"steps": ["deploy", "tag"], "finish": True},
            queue=host_queue("replay-host"),
            task_id=task_id,
        )
        assert "ignored" in _handled(worker, "sti.step", task_id)
        assert api.inspect_image(app_tag)["Id"] == newer
        log = _whole_log(replay_queue, request.build_id)
        assert sum(" succeeded: " in line for line in log) == 1, log
        assert client.wait(request.build_id, timeout=5).image_id == result.image_id
    finally:
        client.close()
        worker.stop()


def test_a_late_copy_of_sti_build_after_its_build_ended_does_nothing(
    replay_queue: str,
    attacker: Celery,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """A copy of sti.build delivered after the build ended (a broker restored it, or anyone
    sent it) claimed the build again as its first attempt and built it once more."""
    client = StiClient(replay_queue)
    worker = _worker(replay_queue, "late-host", tmp_path)
    try:
        store = BlobStore(client.redis, expires_s=EXPIRES_S, max_bytes=MAX_BYTES)
        uploaded = upload_source(store, make_source(tmp_path)).ref  # as the message names it
        request = BuildRequest(str(uploaded), images["sti-fake"], app_tag)
        assert client.wait(client.submit_build(request), timeout=120).success
        keywords = request.task_keywords()
        attacker.send_task(
            "sti.build", kwargs=keywords, task_id=request.build_id, queue="sti.builds"
        )
        _handled(worker, "sti.build", request.build_id, times=2)
        log = _whole_log(replay_queue, request.build_id)
        assert sum("claimed by host" in line for line in log) == 1, log
        assert worker.process.poll() is None
    finally:
        client.close()
        worker.stop()


def test_a_captured_stage_sent_again_while_its_build_runs_does_nothing(
    replay_queue: str,
    attacker: Celery,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """The first stage's sealed state, sent again with a task id of its own while the second
    stage (deploy, tag) runs: both ran the deploy under the attempt's names."""
    client = StiClient(replay_queue)
    worker = _worker(replay_queue, "replay-host", tmp_path)
    try:
        request = BuildRequest(
            str(make_source(tmp_path)),
            images["sti-fake-builder"],
            app_tag,
            runtime_image=images["sti-fake-slow"],
            method="run",
            env={"SLEEP": "6"},
        )
        build_id = client.submit_build(request)
        lines = iter(client.follow(build_id, deadline=time.monotonic() + 120))
        captured = _until_captured(replay_queue, lines)
        task_id = uuid.uuid4().hex
        attacker.send_task(
            "sti.step",
            args=[captured],
            kwargs={"steps": ["deploy", "tag"], "finish": True},
            queue=host_queue("replay-host"),
            task_id=task_id,
        )
        assert "ignored" in _handled(worker, "sti.step", task_id)
        result = client.wait(build_id, timeout=120)
        assert result.success, result.messages
        assert api.inspect_image(app_tag)["Id"] == result.image_id
        log = _whole_log(replay_queue, build_id)
        assert sum("Deploying the build output" in line for line in log) == 1, log
        assert sum(" succeeded: " in line for line in log) == 1, log
    finally:
        client.close()
        worker.stop()


def test_a_build_whose_tag_lock_another_build_took_tags_nothing(
    short_lease_queue: str,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """The build's worker stopped renewing for longer than its lease, and another build of the
    tag took the lock (here: written as its build would): the build went on and tagged."""
    client = StiClient(short_lease_queue)
    worker = _worker(short_lease_queue, "lock-host", tmp_path)
    try:
        build_id = client.submit_build(_slow(tmp_path, images, app_tag, sleep_s=6))
        _until(iter(client.follow(build_id, deadline=time.monotonic() + 60)), "prepare: started")
        other = uuid.uuid4().hex
        client.redis.set(keys.tag_lock(normalized_tag(app_tag)), other, ex=600)
        result = client.wait(build_id, timeout=60)
        assert not result.success and result.error is not None, result
        assert result.error["message"].startswith(f"build {other} of {app_tag} took the tag")
        with pytest.raises(docker.errors.ImageNotFound):
            api.inspect_image(app_tag)
        assert client.redis.get(keys.tag_lock(normalized_tag(app_tag))) == other.encode()
    finally:
        client.close()
        worker.stop()


def test_sti_cleanup_sent_while_a_build_runs_leaves_it_alone(
    worker: Worker,
    client: StiClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    broker_url: str,
) -> None:
    """sti.cleanup removes what a build left on a host once the build ended: sent by anyone
    while the build ran, it removed its prepare container, and the build failed."""
    build_id = client.submit_build(_slow(tmp_path, images, app_tag, sleep_s=4))
    _until(iter(client.follow(build_id, deadline=time.monotonic() + 60)), "prepare: started")
    attacker = Celery("attacker", broker=broker_url, backend=broker_url)
    attacker.conf.update(task_serializer="json", accept_content=["json"])
    task_id = uuid.uuid4().hex
    try:
        attacker.send_task(
            "sti.cleanup",
            kwargs={"build_id": build_id},
            queue=host_queue("host-a"),
            task_id=task_id,
        )
        assert "succeeded" in _handled(worker, "sti.cleanup", task_id)
    finally:
        attacker.close()
    result = client.wait(build_id, timeout=60)
    assert result.success, result.messages


@pytest.mark.parametrize(
    ("host", "tag"),
    [("x\nBuild y succeeded", "acme/app\nforged"), ("", ""), ("../q", "ACME/app")],
)
def test_a_lost_builds_claim_says_no_host_or_tag_sti_would_not_write(host: str, tag: str) -> None:
    """They go into the lost build's log and result: a forged line there, or a tag sti never
    took a lock of."""
    from sti_worker.tasks import _host_and_tag

    assert _host_and_tag({"host": host, "tag": tag}) == (None, None)
    assert _host_and_tag({"host": "host-b", "tag": "acme/app"}) == ("host-b", "acme/app")


@pytest.mark.parametrize("forged", ['{"schema": "sti.result/1", "success": true}', "not json"])
def test_a_steps_output_written_before_it_ran_is_not_taken_for_it(
    short_lease_queue: str,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    forged: str,
) -> None:
    """A step delivered again returns the output its first run kept under its task id; the
    last stage's task id is the build's id, known before the build runs: an output written
    there first was returned instead of running the build (nothing tagged, no result, the
    build re-run by the reaper and skipped again), or failed it with a bare ValueError."""
    client = StiClient(short_lease_queue)
    worker = _worker(short_lease_queue, "once-host", tmp_path)
    try:
        request = BuildRequest(str(make_source(tmp_path)), images["sti-fake"], app_tag)
        client.redis.set(keys.step_output(request.build_id), forged, ex=600)
        result = client.wait(client.submit_build(request), timeout=60)
        assert result.success, result
        assert result.image_id and result.tag == app_tag
    finally:
        client.close()
        worker.stop()


@pytest.mark.parametrize("kind", ["string", "list"])
def test_a_delivery_count_that_is_none_is_counted_anew(
    worker: Worker,
    client: StiClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    broker_url: str,
    kind: str,
) -> None:
    """A step counts its deliveries under its task id (the last stage's is the build id): a
    count that is not one failed the step with a bare Redis error."""
    request = BuildRequest(str(make_source(tmp_path)), images["sti-fake"], app_tag)
    _write_as(redis.Redis.from_url(broker_url), keys.deliveries(request.build_id, 0), kind)
    result = client.wait(client.submit_build(request), timeout=60)
    assert result.success, result


def test_sti_abort_sent_while_a_build_runs_ends_it_once(
    worker: Worker,
    client: StiClient,
    api: docker.APIClient,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    broker_url: str,
) -> None:
    """sti.abort ends a build whose chain broke; anyone can send it, for any build, as anyone
    can cancel one. It ended the build, and the chain that went on stored a second result and
    tagged: now the build ends once, as a cancel would, with nothing tagged."""
    build_id = client.submit_build(_slow(tmp_path, images, app_tag, sleep_s=4))
    _until(iter(client.follow(build_id, deadline=time.monotonic() + 60)), "prepare: started")
    attacker = Celery("attacker", broker=broker_url, backend=broker_url)
    attacker.conf.update(task_serializer="json", accept_content=["json"])
    try:
        abort = {"build_id": build_id, "tag": app_tag, "attempt": 1}
        attacker.send_task("sti.abort", kwargs=abort, queue=host_queue("host-a"))
    finally:
        attacker.close()
    result = client.wait(build_id, timeout=60)
    assert result.error is not None and result.error["code"] == "InternalError", result
    deadline = time.monotonic() + 30  # the chain's step, which goes on, ends with no effect
    while _left_of(api, build_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    log = _whole_log(broker_url, build_id)
    outcomes = [line for line in log if re.match(f"Build {build_id} (succeeded|failed): ", line)]
    assert len(outcomes) == 1, log
    with pytest.raises(docker.errors.ImageNotFound):
        api.inspect_image(app_tag)
    assert client.wait(build_id, timeout=5) == result
