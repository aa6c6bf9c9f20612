"""Source images: an uploaded source submitted again unchanged starts from the copy an earlier
build made (on BuildKit and in a container), with the same output; a different builder or part
of the source makes a new one; the worker's housekeeping keeps a bounded number; their names
cannot be a user's. A delta upload builds the tree of a whole upload whether its base's copy is
there or not."""

from __future__ import annotations

import io
import re
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import redis

from sti.blobstore import BlobStore
from sti.errors import InvalidInput
from sti.model import SOURCE_REPOSITORY, BuildRequest, Result, validate_image_ref, validate_tag
from sti.upload_refs import SCHEME
from sti_submit.manifests import ManifestCache
from sti_submit.upload import SourceUpload, upload_source
from sti_worker.engine import pipeline
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.pipeline import run_build
from sti_worker.engine.sandbox import Sandbox
from sti_worker.engine.source_images import forget_older
from sti_worker.engine.sources import SourcePolicy, Sources
from sti_worker.uploads import layers, opener, settled, streamer
from tests.dockertools import TRACKER, Entry, image_files, image_tree
from tests.unit.deltas_helpers import edit_everything, edit_removing_nothing, make_tree, submit

UNCHANGED = "The source is unchanged since an earlier build: starting from its copy"
LAID_OVER = "Laying the changes over the copy an earlier build made of their base"


@pytest.fixture
def store(broker_url: str) -> Iterator[BlobStore]:
    client = redis.Redis.from_url(broker_url)
    yield BlobStore(client, expires_s=600, max_bytes=10**8)
    client.close()


SANDBOXES = {"buildkit": Sandbox.engine_defaults(), "container": Sandbox()}
# prepare on BuildKit (the limits lifted) and in a container (the default limits)
BOTH_WAYS = pytest.mark.parametrize("keeping_host", list(SANDBOXES), indirect=True)


@pytest.fixture
def keeping_host(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[DockerHost]:
    """Keeps two source images, and makes them of sources of any size; prepare runs on
    BuildKit unless the test asks for the container too (BOTH_WAYS)."""
    monkeypatch.setattr(pipeline, "SOURCE_IMAGE_MIN_BYTES", 0)
    way = getattr(request, "param", "buildkit")
    host = DockerHost(sandbox=SANDBOXES[way], source_images_keep=2)
    assert host.builder == way
    yield host
    host.close()


@pytest.fixture
def source_images(api: docker.APIClient) -> Iterator[None]:
    """The engine's source images are this test's: none before, none left after."""
    _remove_source_images(api)
    yield
    _remove_source_images(api)


def _remove_source_images(api: docker.APIClient) -> None:
    for reference in _source_images(api):
        api.remove_image(reference, force=True)


def _source_images(api: docker.APIClient) -> list[str]:
    found = api.images(name=SOURCE_REPOSITORY)
    return [tag for image in found for tag in image.get("RepoTags") or ()]


def _build(
    host: DockerHost,
    store: BlobStore,
    source: Path | str,
    image: str,
    tag: str,
    **options: object,
) -> tuple[Result, list[str]]:
    result, lines = _run(host, store, source, image, tag, **options)
    TRACKER.built(result.image_id)
    assert result.success, result.messages
    return result, lines


def _run(
    host: DockerHost,
    store: BlobStore,
    source: Path | str,
    image: str,
    tag: str,
    **options: object,
) -> tuple[Result, list[str]]:
    ref = upload_source(store, source).ref if isinstance(source, Path) else source
    sources = Sources(
        SourcePolicy(),
        openers={SCHEME: opener(lambda: store)},
        streamers={SCHEME: streamer(lambda: store)},
        settled={SCHEME: settled(lambda: store)},
        layers={SCHEME: layers(lambda: store)},
    )
    lines: list[str] = []
    request = BuildRequest(source=str(ref), build_image=image, tag=tag, clean=True, **options)
    return run_build(host, request, lines.append, host="test", sources=sources), lines


def _source(root: Path, content: str) -> Path:
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "main.txt").write_text(content)
    (root / "app" / "lib" / "util.txt").write_text("util\n")
    return root / "app"


@pytest.mark.usefixtures("source_images")
@BOTH_WAYS
def test_an_unchanged_source_starts_from_its_copy_with_the_same_output(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    source = _source(tmp_path, "v1\n")
    expected = {"main.txt": b"v1\n", "lib/util.txt": b"util\n"}
    first, first_lines = _build(keeping_host, store, source, images["sti-fake"], app_tag)
    assert image_files(api, str(first.image_id), "/sti-fake/src") == expected
    again, again_lines = _build(keeping_host, store, source, images["sti-fake"], app_tag)
    assert image_files(api, str(again.image_id), "/sti-fake/src") == expected
    assert UNCHANGED not in first_lines and UNCHANGED in again_lines
    assert not [line for line in again_lines if "COPY src" in line]  # no source sent again
    assert len(_source_images(api)) == 1
    labels = api.inspect_image(str(again.image_id))["Config"]["Labels"]
    assert labels["io.sti.build-id"] == again.build_id


@pytest.mark.usefixtures("source_images")
def test_a_source_built_while_it_uploads_is_copied_under_its_digest(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """As sti-submit does with a directory: the build is given the upload's name and starts
    while the bytes are still on their way (sent here a moment after the build starts); the
    copy is named by the content's digest once read, so the same source submitted by its digest
    starts from it."""
    source = _source(tmp_path, "streamed\n")
    upload = SourceUpload(store, source)
    assert upload.streams and upload.ref.blob.startswith("upload:")
    upload.open()
    sent: list[str] = []
    sender = threading.Timer(0.5, lambda: sent.append(str(upload.send().ref)))
    sender.start()
    try:
        first, first_lines = _build(
            keeping_host, store, str(upload.ref), images["sti-fake"], app_tag
        )
    finally:
        sender.join()
    expected = {"main.txt": b"streamed\n", "lib/util.txt": b"util\n"}
    assert image_files(api, str(first.image_id), "/sti-fake/src") == expected
    assert f"Uploaded source {upload.ref.blob} goes into the build as it arrives" in first_lines
    (digest_ref,) = sent
    assert digest_ref.startswith(f"{SCHEME}sha256:")
    again, again_lines = _build(keeping_host, store, digest_ref, images["sti-fake"], app_tag)
    assert UNCHANGED in again_lines
    assert image_files(api, str(again.image_id), "/sti-fake/src") == expected


def _tree_with_owners(
    api: docker.APIClient, image: str, root: str, *, times: bool = False
) -> dict[str, tuple[object, ...]]:
    """Every member under root: its type, mode, owner, link target and content (and with
    times, its modification time)."""
    container = api.create_container(image, name=f"test-tree-{uuid.uuid4().hex[:12]}")
    try:
        stream, _ = api.get_archive(container, root)
        data = b"".join(stream)
    finally:
        api.remove_container(container, force=True, v=True)
    tree: dict[str, tuple[object, ...]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            read = archive.extractfile(member) if member.isreg() else None
            content = read.read() if read else b""
            fields = (member.type, member.mode, member.uid, member.gid, member.linkname, content)
            tree[member.name] = (*fields, member.mtime) if times else fields
    return tree


def _what_users_see(
    api: docker.APIClient, image: str, root: str, *, history: bool = True
) -> dict[str, object]:
    """An output image as its users see it: its files where the inputs went (modes, owners
    aside from the layer they are in), its config but for the build's own id, its history's
    steps."""
    config = dict(api.inspect_image(image)["Config"])
    # a committed container's name for itself, and the image it was made of (the builder, or
    # the copy of the source into it): each build's own
    for own in ("Hostname", "Image"):
        config.pop(own, None)
    config["Labels"] = {
        name: value
        for name, value in (config.get("Labels") or {}).items()
        if name not in ("io.sti.build-id", "org.opencontainers.image.created")
    }
    with_owners = _tree_with_owners(api, image, root)
    steps = [
        re.sub(r"STI_BUILD_ID=\w+", "STI_BUILD_ID=<id>", step["CreatedBy"]).removesuffix(
            " # buildkit"
        )
        for step in api.history(image)
    ]
    seen: dict[str, object] = {"files": with_owners, "config": config}
    return {**seen, "history": steps} if history else seen


LISTING = "#!/bin/sh\nset -e\nls -lnR {root}/src > /opt/app-root/listing\n"


@pytest.mark.parametrize(
    ("builder", "root", "options", "brought"),
    [
        ("sti-fake", "/tmp", {}, {}),
        ("sti-fake-entrypoint", "/tmp", {}, {}),
        ("s2i-fake", "/opt/app-root", {}, {}),
        ("s2i-fake", "/opt/app-root", {}, {"run": "#!/bin/sh\necho brought\n"}),
        (
            "s2i-fake",
            "/opt/new",  # what the copy made of a destination the image lacks
            {"destination": "/opt/new/dest"},
            {"assemble": LISTING.format(root="/opt/new/dest")},
        ),
    ],
    ids=["sti", "entrypoint", "s2i-user-1001", "s2i-run", "s2i-destination-not-in-the-image"],
)
@pytest.mark.usefixtures("source_images")
@BOTH_WAYS
def test_a_build_from_a_copy_gives_the_image_a_build_without_one_gives(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    builder: str,
    root: str,
    options: dict[str, object],
    brought: dict[str, str],
) -> None:
    """Files (with their modes and owners), config and history: the copy is an implementation
    detail. A script the source brings (which an s2i image takes) is in the copy's layer, not
    one of its own: there the history has one step less."""
    source = _source(tmp_path, "v1\n")
    for name, script in brought.items():
        (source / ".s2i" / "bin").mkdir(parents=True, exist_ok=True)
        (source / ".s2i" / "bin" / name).write_text(script)
        (source / ".s2i" / "bin" / name).chmod(0o755)
    (source / "lib" / "tool").write_text("#!/bin/sh\n")
    (source / "lib" / "tool").chmod(0o4755)  # no setuid bit gets into an image
    options = {**options, "source_scripts": tuple(sorted(brought))}  # as sti-submit finds them
    direct = DockerHost(sandbox=keeping_host.sandbox, source_images_keep=0)
    try:
        without, _ = _build(direct, store, source, images[builder], app_tag, **options)
    finally:
        direct.close()
    seen = _what_users_see(api, str(without.image_id), root)  # before the tag moves on
    assert seen["files"], "the build put nothing where it was looked for"
    if brought:
        del seen["history"]
    if keeping_host.builder == "container" and "history" in seen:
        # in a container the source goes in with prepare's layer: the copy is a step more
        history = list(seen["history"])  # type: ignore[call-overload]
        seen["history"] = [*history[:1], "COPY src /tmp/src", *history[1:]]
    copied, lines = _build(keeping_host, store, source, images[builder], app_tag, **options)
    assert UNCHANGED not in lines
    assert _what_users_see(api, str(copied.image_id), root, history=not brought) == seen
    again, again_lines = _build(keeping_host, store, source, images[builder], app_tag, **options)
    assert UNCHANGED in again_lines
    assert _what_users_see(api, str(again.image_id), root, history=not brought) == seen


@pytest.mark.usefixtures("source_images")
@BOTH_WAYS
def test_a_prepare_that_fails_after_the_copy_leaves_the_copy_and_no_container(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """The copy's container is removed while prepare runs: a build that fails waits for it
    too (nothing_left_behind checks), and the copy serves the next build of the source."""
    source = _source(tmp_path, "v1\n")
    failed, lines = _run(keeping_host, store, source, images["sti-fake-failing"], app_tag)
    assert not failed.success
    assert failed.error_code == "BuildFailed"
    assert "/usr/bin/prepare exited with code 3" in failed.messages
    assert UNCHANGED not in lines
    assert len(_source_images(api)) == 1
    again, again_lines = _run(keeping_host, store, source, images["sti-fake-failing"], app_tag)
    assert again.error_code == "BuildFailed"
    assert UNCHANGED in again_lines


@pytest.mark.usefixtures("source_images")
def test_another_builder_or_context_dir_makes_another_copy_and_only_two_are_kept(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    source = _source(tmp_path, "v1\n")
    _build(keeping_host, store, source, images["sti-fake"], app_tag)
    first = set(_source_images(api))
    _, other_builder = _build(keeping_host, store, source, images["sti-fake-no-save"], app_tag)
    part, part_lines = _build(
        keeping_host, store, source, images["sti-fake"], app_tag, context_dir="lib"
    )
    assert UNCHANGED not in other_builder and UNCHANGED not in part_lines
    assert image_files(api, str(part.image_id), "/sti-fake/src") == {"util.txt": b"util\n"}
    made = set(_source_images(api))
    assert len(made) == 3  # a build leaves the ones beyond the limit to housekeeping
    forget_older(keeping_host)  # as a worker does after each build's result
    assert set(_source_images(api)) == made - first  # STI_SOURCE_IMAGES_KEEP, the oldest gone


@pytest.mark.parametrize(("keep", "least_bytes"), [(0, 0), (2, None)])
def test_no_source_image_is_made_when_none_are_kept_or_the_source_is_small(
    api: docker.APIClient,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    keep: int,
    least_bytes: int | None,
) -> None:
    """None kept; or a source (some bytes) smaller than the size that makes one worth it."""
    if least_bytes is not None:
        monkeypatch.setattr(pipeline, "SOURCE_IMAGE_MIN_BYTES", least_bytes)
    host = DockerHost(sandbox=Sandbox.engine_defaults(), source_images_keep=keep)
    try:
        before = set(
            _source_images(api)
        )  # a set: the engine lists images of one second in any order
        source = _source(tmp_path, "v1\n")
        for _ in range(2):
            _, lines = _build(host, store, source, images["sti-fake"], app_tag)
        assert set(_source_images(api)) == before and UNCHANGED not in lines
    finally:
        host.close()


@pytest.mark.parametrize(
    "name",
    [
        "sti-source:0123",
        "sti-source",
        "docker.io/library/sti-source:x",
        "library/sti-source:x",
        "index.docker.io/library/sti-source@sha256:" + "0" * 64,
        "sti-base-0123456789abcdef0123456789abcdef:build",
        "docker.io/sti-base-x:source",
    ],
)
def test_names_sti_keeps_for_itself_are_refused_as_tags_and_images(name: str) -> None:
    with pytest.raises(InvalidInput, match="sti keeps for itself"):
        validate_image_ref(name, "BUILD_IMAGE")
    if "@" not in name:
        with pytest.raises(InvalidInput, match="sti keeps for itself"):
            validate_tag(name)


@pytest.mark.parametrize(
    "name", ["registry.example/sti-source:x", "sti-sources:x", "me/sti-base-x:y", "sti-basement"]
)
def test_names_that_only_look_alike_are_accepted(name: str) -> None:
    assert validate_image_ref(name, "BUILD_IMAGE") == name


@pytest.mark.usefixtures("source_images")
@BOTH_WAYS
def test_an_s2i_builder_of_uid_1001_owns_the_copied_source(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """assemble moves /tmp/src away, which only its owner may do."""
    source = _source(tmp_path, "v1\n")
    _build(keeping_host, store, source, images["s2i-fake"], app_tag)
    again, lines = _build(keeping_host, store, source, images["s2i-fake"], app_tag)
    assert UNCHANGED in lines
    assert image_files(api, str(again.image_id), "/opt/app-root")["main.txt"] == b"v1\n"


@pytest.fixture
def made_source_images(api: docker.APIClient) -> Iterator[None]:
    """The source images the test made (found by what was there before) are removed after; the
    others on the engine are left alone."""
    before = set(_source_images(api))
    yield
    for reference in set(_source_images(api)) - before:
        api.remove_image(reference, force=True)


@pytest.mark.usefixtures("made_source_images")
@pytest.mark.parametrize("base_copy_kept", [True, False], ids=["base-copy-kept", "base-copy-gone"])
def test_a_delta_builds_the_tree_of_a_whole_upload_with_or_without_its_base_copy(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
    base_copy_kept: bool,
) -> None:
    """The worker reads a delta's base from the store, never from its copy."""
    root = make_tree(tmp_path / "app")
    cache = ManifestCache(root, "redis://test", tmp_path / "cache")
    before = set(_source_images(api))
    _build(keeping_host, store, str(submit(store, root, cache).ref), images["sti-fake"], app_tag)
    base_copies = set(_source_images(api)) - before
    assert len(base_copies) == 1
    if not base_copy_kept:
        api.remove_image(base_copies.pop(), force=True)
    edit_everything(root)
    trees = []
    for cached in (cache, None):  # a delta, then the whole edited directory
        uploaded = submit(store, root, cached)
        assert uploaded.ref.kind == ("delta" if cached else "dir")
        built, _ = _build(keeping_host, store, str(uploaded.ref), images["sti-fake"], app_tag)
        trees.append(image_tree(api, str(built.image_id), "/sti-fake/src"))
    from_delta, from_whole = trees
    assert from_delta == from_whole
    assert from_delta["link"] == Entry("symlink", linkname="run.sh", mode=0o120777)
    assert "old" not in from_delta and from_delta["emptied"].kind == "dir"


@pytest.mark.usefixtures("made_source_images")
def test_changes_that_remove_nothing_are_laid_over_the_base_copy_as_a_layer_of_their_own(
    api: docker.APIClient,
    keeping_host: DockerHost,
    store: BlobStore,
    images: dict[str, str],
    app_tag: str,
    tmp_path: Path,
) -> None:
    """The same files, modes, owners and times as a copy of the whole edited directory, in an
    image that holds the base's copy and, above it, a layer of the changes only."""
    root = make_tree(tmp_path / "app")
    cache = ManifestCache(root, "redis://test", tmp_path / "cache")
    _build(keeping_host, store, str(submit(store, root, cache).ref), images["sti-fake"], app_tag)
    edit_removing_nothing(root)
    copies, lines, trees = [], [], []
    for cached in (cache, None):  # a delta, then the whole edited directory
        before = set(_source_images(api))
        uploaded = submit(store, root, cached)
        built, said = _build(keeping_host, store, str(uploaded.ref), images["sti-fake"], app_tag)
        (copy,) = set(_source_images(api)) - before
        copies.append(copy)
        lines.append(said)
        trees.append(_tree_with_owners(api, str(built.image_id), "/tmp/src", times=True))
    assert LAID_OVER in lines[0] and LAID_OVER not in lines[1]
    assert trees[0] == trees[1]
    laid, whole = (api.history(copy)[0]["Size"] for copy in copies)
    assert laid < 2_000 < 80_000 < whole  # the changes, and the 76 kB file the base holds
