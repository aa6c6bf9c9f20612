"""Labels that say where an output image came from: s2i's (io.openshift.s2i.build.*, named as in
s2i's pkg/api/constants/labels.go), so tools that read s2i images read sti's, and OCI's
(org.opencontainers.image.*).

Values are the build's own facts: the builder as named and its image id, the source as the
worker fetched it (credentials masked; an upload is named by its digest), and for git sources
the commit, its author, date and subject.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sti.model import RESERVED_LABEL_PREFIX, BuildRequest
from sti.source_urls import describe
from sti.upload_refs import SCHEME as UPLOAD_SCHEME

S2I = "io.openshift.s2i"
OCI = "org.opencontainers.image"
K8S = "io.k8s"
S2I_BUILD_PREFIX = f"{S2I}.build."  # s2i's provenance namespace
OCI_PROVENANCE = frozenset(
    f"{OCI}.{name}" for name in ("source", "revision", "base.name", "base.digest", "created")
)


def is_provenance(name: str) -> bool:
    """Whether a label is one of the provenance labels only sti sets on an output image: s2i's
    io.openshift.s2i.build.* (whether or not this build has a value for it: a commit id where
    sti wrote none is a claim just the same), the OCI ones sti writes, and io.sti.*."""
    return name.startswith((S2I_BUILD_PREFIX, RESERVED_LABEL_PREFIX)) or name in OCI_PROVENANCE


# what a source may say of itself; each is written on every output image, empty when this
# source says nothing of it, as OpenShift's builds reset them: else the builder's own value (a
# builder built from git carries its commit, a CI's its repository URL) would be the output's
SOURCE_PROVENANCE = (
    f"{S2I}.build.source-context-dir",
    *(f"{S2I}.build.commit.{name}" for name in ("id", "ref", "author", "date", "message")),
    f"{OCI}.source",
    f"{OCI}.revision",
)


def source_labels(
    request: BuildRequest, revision: str | None, commit: Mapping[str, str] | None
) -> dict[str, str]:
    """What the fetched source says of itself (every label of SOURCE_PROVENANCE: empty where
    it says nothing)."""
    location = describe(request.source)  # credentials and query values masked
    labels = {**dict.fromkeys(SOURCE_PROVENANCE, ""), f"{S2I}.build.source-location": location}
    if not location.startswith(UPLOAD_SCHEME) and "://" in location:
        labels[f"{OCI}.source"] = location
    if request.context_dir:
        labels[f"{S2I}.build.source-context-dir"] = request.context_dir
    if revision:
        labels |= {f"{S2I}.build.commit.id": revision, f"{OCI}.revision": revision}
    if request.ref:
        labels[f"{S2I}.build.commit.ref"] = request.ref
    for name, value in (commit or {}).items():
        labels[f"{S2I}.build.commit.{name}"] = value
    return labels


def image_labels(
    request: BuildRequest,
    source: Mapping[str, str],
    base: tuple[str, str],
    created: float | None = None,
) -> dict[str, str]:
    """Every label sti gives an output image: the source's provenance, the builder's, its base
    (name and image id: the builder, or the runtime image of an extended build), the time, the
    display name (the tag unless given, as s2i) and description; then the user's --label."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    labels = {
        **source,
        f"{S2I}.build.image": request.build_image,
        f"{OCI}.base.name": base[0],
        f"{OCI}.base.digest": base[1],
        f"{OCI}.created": stamp,
        f"{K8S}.display-name": request.display_name or request.tag,
    }
    if request.description:
        labels[f"{K8S}.description"] = request.description
    return {**labels, **request.labels}
