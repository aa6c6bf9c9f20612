"""Source images: a builder image with one uploaded source copied in, kept on the engine.

A source submitted again unchanged (sti-submit knows it, and names the same upload) then costs
no context at all: prepare starts from the source image, as it would from the builder after the
copy. The copy is made in a created container, the source put in as it arrives, and committed:
cheaper than a BuildKit COPY, which unpacks its whole context before copying it. The image is
named by a hash of everything the copy depends on (the upload by its digest: of an
upload read as it arrives, known once the copy is made), in one repository sti keeps for itself
(APP_IMAGE_TAG and image names may not use it, so a name there is one sti gave). A build
removes the container of its copy while prepare runs; the worker removes the source images beyond
the STI_SOURCE_IMAGES_KEEP most recently made after the build's result (forget_older): the engine
holds every image request, a build's commit among them, for as long as it deletes an image's
layers (0.2-1 s for the 526 MB of a 500 MB source here), so the build that made one more would
otherwise wait for the removal of another.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime

from sti.model import SOURCE_REPOSITORY
from sti.tarstreams import TarPart

from .docker_host import DockerHost, LogSink, container_name
from .methods import PrepareSpec, make_directory, put_inputs

# part of every key: a new way of copying means new images (2: git metadata left out of
# every source; a copy made before may hold an archive's .git)
_FORMAT = "sti-source/2"


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
    # the removal of the copy's container, running meanwhile: the build waits for it before it
    # ends
    pending: tuple[Future[None], ...] = ()

    @contextmanager
    def settling(self) -> Iterator[None]:
        """The build's work while the pending removal runs, then a wait for it; its failure is
        raised unless the work failed already (cleanup then finds the container by its name)."""
        try:
            yield
        finally:
            futures.wait(self.pending)
        for removal in self.pending:
            removal.result()


Layer = tuple[str, TarPart]  # the key of another source's image, and what makes this one of it


def source_image(
    host: DockerHost,
    spec: PrepareSpec,
    source: TarPart,
    key: Callable[[], str | None],
    sink: LogSink,
    over: Callable[[], Layer | None] = lambda: None,
) -> SourceImage:
    """The source image for key, made from spec.base_image and source if the engine does not
    have it. key() is None for a source not known by its content yet (an upload still
    arriving): it is asked again once the copy has read all of it. over(), for a source that
    is changes over another (a delta upload), names that one's image and the layer that makes
    this one of it: laid over that image when the engine has it, as a layer of its own."""
    known = key()
    if known:
        found = host.image_id(f"{SOURCE_REPOSITORY}:{known}")
        if found:
            sink("The source is unchanged since an earlier build: starting from its copy")
            return SourceImage(found)
    layered = over()
    base = layered and host.image_id(f"{SOURCE_REPOSITORY}:{layered[0]}")
    if layered and base:
        sink("Laying the changes over the copy an earlier build made of their base")
        made = _copied_in(host, replace(spec, base_image=base), layered[1])
    else:
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
        make_directory(host, container, spec.input_root, spec.owner)
        put_inputs(host, container, spec, [source])
        image = host.commit(container, config=config)
    except BaseException:
        host.remove_container(container)
        raise
    return SourceImage(image, (_started(lambda: host.remove_container(container)),))


@contextmanager
def _settled_on_failure(made: SourceImage) -> Iterator[None]:
    """Some work after the copy's removal started: if it fails, the removal is waited for
    before it raises (on success it runs on, and the build waits for it through
    made.settling())."""
    try:
        yield
    except BaseException:
        futures.wait(made.pending)
        raise


def forget_older(host: DockerHost) -> None:
    """Remove the source images beyond the host.source_images_keep most recently made (a build
    that starts from one has it pinned by a name of its own, so it stays while in use), but the
    base a kept one laid a delta's changes over: the next delta of that directory is laid over
    it too (deltas are made against the last whole upload). The image list gives whole seconds,
    and a build makes one within a second of another's: the order is the engine's nanoseconds,
    asked of each once there are too many."""
    made = host.references_in(SOURCE_REPOSITORY)
    if len(made) <= host.source_images_keep:
        return
    found = [(host.image_made(reference), reference) for reference in made]
    newest_first = sorted(
        ((_nanoseconds(image.created), image, reference) for image, reference in found if image),
        key=lambda stamped: (stamped[0], stamped[2]),
        reverse=True,
    )
    kept, older = newest_first[: host.source_images_keep], newest_first[host.source_images_keep :]
    bases = {image.parent for _made_at, image, _reference in kept}
    for _made_at, image, reference in older:
        if image.id not in bases:
            host.remove_reference(reference)


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)")


def _nanoseconds(stamp: str) -> int:
    """An RFC 3339 time (the engine's, fraction of any length up to nanoseconds) as nanoseconds
    since the epoch; 0 for one it does not write so (oldest: removed first)."""
    match = _RFC3339.fullmatch(stamp)
    if not match:
        return 0
    whole, fraction, zone = match.groups()
    seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    return int(seconds) * 1_000_000_000 + int((fraction or "").ljust(9, "0"))


def _started(work: Callable[[], None]) -> Future[None]:
    """work, started on a thread of its own."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sti-source-image")
    try:
        return pool.submit(work)
    finally:
        pool.shutdown(wait=False)
