"""Source images: a builder image with one uploaded source copied in, kept on the engine.

A source submitted again unchanged (sti-submit knows it, and names the same upload) then costs
no context at all: prepare starts from the source image, as it would from the builder after the
copy. The first build of a source pays one more BuildKit request, which only copies files. The
image is named by a hash of everything the copy depends on (the upload by its digest: of an
upload read as it arrives, known once the copy is made), in one repository sti keeps for itself
(APP_IMAGE_TAG and image names may not use it, so a name there is one sti gave); the
STI_SOURCE_IMAGES_KEEP most recently made are kept, older ones removed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sti.model import SOURCE_REPOSITORY
from sti.tarstreams import TarPart

from .docker_host import DockerHost, LogSink
from .methods import PrepareSpec, build_on, chown_flag, script_copies

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


def source_image(
    host: DockerHost,
    spec: PrepareSpec,
    source: TarPart,
    key: Callable[[], str | None],
    keep: int,
    sink: LogSink,
) -> str:
    """The id of the source image for key, made from spec.base_image and source if the engine
    does not have it. key() is None for a source not known by its content yet (an upload still
    arriving): it is asked again once the copy has read all of it."""
    known = key()
    if known:
        found = host.image_id(f"{SOURCE_REPOSITORY}:{known}")
        if found:
            sink("The source is unchanged since an earlier build: starting from its copy")
            return found
    lines = [f"COPY {chown_flag(spec)}src {spec.input_root}/src", *script_copies(spec)]
    image = build_on(
        host,
        spec.base_image,
        build_id=spec.build_id,
        stage="source",
        lines=lines,
        inputs=[source],
        labels={},
        sink=sink,
    )
    settled = known or key()
    if settled:
        host.tag(image, f"{SOURCE_REPOSITORY}:{settled}")
        _forget_older(host, keep)
    return image


def _forget_older(host: DockerHost, keep: int) -> None:
    """Remove the source images beyond the keep most recently made (a build that starts from
    one has it pinned by a name of its own, so it stays while in use)."""
    made = host.images_in(SOURCE_REPOSITORY)
    for reference, _created in sorted(made, key=lambda item: item[1], reverse=True)[keep:]:
        host.remove_reference(reference)
