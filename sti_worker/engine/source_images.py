"""Source images: a builder image with one uploaded source copied in, kept on the engine.

A source submitted again unchanged (sti-submit knows it, and names the same upload) then costs
no context at all: prepare starts from the source image, as it would from the builder after the
copy. The copy is made in a created container, the source put in as it arrives, and committed:
cheaper than a BuildKit COPY, which unpacks its whole context before copying it. The image is
named by a hash of everything the copy depends on (the upload by its digest: of an
upload read as it arrives, known once the copy is made), in one repository sti keeps for itself
(APP_IMAGE_TAG and image names may not use it, so a name there is one sti gave); the
STI_SOURCE_IMAGES_KEEP most recently made are kept: a build that makes a new one removes the
oldest beyond that while its source arrives, and the container of the copy while prepare runs
(the engine holds every image request for as long as it deletes an image's layer, 0.5 s for 56 MB
here: done after a build, that would stall whatever build comes next).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from sti.model import SOURCE_REPOSITORY
from sti.tarstreams import TarPart, empty_directory, stream_tar

from .docker_host import DockerHost, LogSink, container_name
from .methods import PrepareSpec, put_inputs

_FORMAT = "sti-source/1"  # part of every key: a new way of copying means new images


@dataclass(frozen=True)
class SourceOrigin:
    """What a source image copies: an uploaded source (its content digest, the part of it the
    build takes), into which builder image, owned by whom, where."""

    upload: str  # sti+upload://sha256:...
    context_dir: str | None
    exclude: Sequence[str]

    def key(self, spec: PrepareSpec) -> str:
        described = {
            "format": _FORMAT,
            "upload": self.upload,
            "context_dir": self.context_dir,
            "exclude": list(self.exclude),
            "base": spec.base_image,
            "owner": list(spec.owner) if spec.owner else None,
            "root": spec.input_root,
            "scripts": list(spec.source_scripts),
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class SourceImage:
    id: str
    # removals started by the copy (its container; older source images), running meanwhile:
    # the build waits for them before it ends
    pending: tuple[Future[None], ...] = ()

    @contextmanager
    def settling(self) -> Iterator[None]:
        """The build's work while the pending removals run, then a wait for them; the first
        to fail is raised unless the work failed already (cleanup then finds a container by
        its name; an older source image is removed by the next copy)."""
        try:
            yield
        finally:
            futures.wait(self.pending)
        for removal in self.pending:
            removal.result()


def source_image(
    host: DockerHost,
    spec: PrepareSpec,
    source: TarPart,
    key: Callable[[], str | None],
    sink: LogSink,
) -> SourceImage:
    """The source image for key, made from spec.base_image and source if the engine does not
    have it. key() is None for a source not known by its content yet (an upload still
    arriving): it is asked again once the copy has read all of it."""
    known = key()
    if known:
        found = host.image_id(f"{SOURCE_REPOSITORY}:{known}")
        if found:
            sink("The source is unchanged since an earlier build: starting from its copy")
            return SourceImage(found)
    sink(f"Copying the source into {spec.input_root}/src of a copy of the builder image")
    made = _copied_in(host, spec, source)
    with _settled_on_failure(made):
        settled = known or key()
        if settled:
            host.tag(made.id, f"{SOURCE_REPOSITORY}:{settled}")
    return made


def _copied_in(host: DockerHost, spec: PrepareSpec, source: TarPart) -> SourceImage:
    """spec.base_image with the source (and its own s2i scripts) copied in, as a BuildKit COPY
    would: put into a created, never started container as it arrives, and committed. One write
    of the files and one of the layer, where a build unpacks its whole context first and then
    copies it. The container's command is only what the image's history says of the layer; the
    image's config is the builder's. Once committed, the container is removed while prepare runs
    (deleting its 56 MB / 2,000 files took the engine 0.5-0.8 s here)."""
    config = host.image_config(spec.base_image)
    history = [f"COPY src {spec.input_root}/src"]  # as BuildKit words it, owner or not
    container = host.create_container(
        spec.base_image,
        history,
        name=container_name(spec.build_id, "source"),
        build_id=spec.build_id,
    )
    try:
        _make_directory(host, container, spec.input_root, spec.owner)
        # room for the new copy, made while the source arrives: putting it into the container
        # needs no image request (the commit does, and waits for what is left of this)
        keep = host.source_images_keep - 1
        forgotten = SourceImage(spec.base_image, (_started(lambda: _forget_older(host, keep)),))
        with _settled_on_failure(forgotten):
            put_inputs(host, container, spec, [source])
            image = host.commit(container, config=config)
    except BaseException:
        host.remove_container(container)
        raise
    removed = _started(lambda: host.remove_container(container))
    return SourceImage(image, (*forgotten.pending, removed))


@contextmanager
def _settled_on_failure(made: SourceImage) -> Iterator[None]:
    """Some work after removals started: if it fails, they are waited for before it raises
    (on success they run on, and the build waits for them through made.settling())."""
    try:
        yield
    except BaseException:
        futures.wait(made.pending)
        raise


def _make_directory(
    host: DockerHost, container: str, path: str, owner: tuple[int, int] | None
) -> None:
    """path and the parents it lacks, 0755 and owned as a BuildKit COPY makes them (by the
    --chown owner, else root)."""
    missing: list[str] = []
    current = path
    while current != "/" and not host.stat(container, current).exists:
        missing.insert(0, current.lstrip("/"))
        current = posixpath.dirname(current)
    if missing:
        parts = [empty_directory(name) for name in missing]
        host.put_archive(container, "/", stream_tar(parts, owner=owner))


def _forget_older(host: DockerHost, keep: int) -> None:
    """Remove the source images beyond the keep most recently made (a build that starts from
    one has it pinned by a name of its own, so it stays while in use)."""
    made = host.images_in(SOURCE_REPOSITORY)
    newest_first = sorted(made, key=lambda item: item[1], reverse=True)
    for reference, _created in newest_first[keep:]:
        host.remove_reference(reference)


def _started(work: Callable[[], None]) -> Future[None]:
    """work, started on a thread of its own."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sti-source-image")
    try:
        return pool.submit(work)
    finally:
        pool.shutdown(wait=False)
