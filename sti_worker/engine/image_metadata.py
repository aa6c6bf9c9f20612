"""Labels assemble asks for (s2i): <destination>/.s2i/image_metadata.json, of the form
{"labels": [{"name": "value"}, ...]}, read from the image prepare made. They go over the
builder's labels; the user's --label still wins, and sti's provenance labels (see
provenance.is_provenance: io.openshift.s2i.build.*, OCI's, io.sti.*) are not theirs to set: what
the source's own code writes cannot say where the image came from. The file is the build's
output: anything else in it is a failed build naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sti.errors import BuildFailed, InvalidInput
from sti.model import validate_labels

from .docker_host import DockerHost, FileTooLarge, LogSink
from .methods import build_on
from .provenance import is_provenance

METADATA_FILE = ".s2i/image_metadata.json"
_MAX_BYTES = 1024 * 1024


def metadata_labels(
    host: DockerHost, image_id: str, destination: str, build_id: str, sink: LogSink
) -> dict[str, str]:
    """The labels the image's metadata file asks for (none without the file)."""
    path = f"{destination.rstrip('/')}/{METADATA_FILE}"
    try:
        data = host.image_file(
            image_id, path, max_bytes=_MAX_BYTES, build_id=build_id, role="metadata"
        )
    except FileTooLarge as error:
        raise BuildFailed(f"{error}: assemble's image metadata should be a few labels") from None
    if data is None:
        return {}
    try:
        entries = _entries(json.loads(data.decode("utf-8")))
        labels: dict[str, str] = {}
        for entry in entries:
            labels.update(entry)
        wanted = {k: v for k, v in labels.items() if not is_provenance(k)}
        validate_labels(wanted)
    except (ValueError, RecursionError, InvalidInput) as error:
        reason = error.message if isinstance(error, InvalidInput) else str(error)
        if isinstance(error, RecursionError):
            reason = "it nests deeper than a JSON reader follows"
        raise BuildFailed(
            f"{path}, which assemble wrote, is not image metadata: {reason}"
        ) from None
    for name in sorted(set(labels) - set(wanted)):
        sink(f"{path}: label {_shown(name)} is sti's own, left as it is")
    if wanted:
        sink(f"Labels from {path}: {', '.join(_shown(name) for name in sorted(wanted))}")
    return wanted


def _shown(name: str) -> str:
    """A label name on one line of the log: escaped as JSON escapes it unless plain ASCII (the
    file can spell a line break, or a lone surrogate that no log can encode)."""
    return name if name.isascii() and name.isprintable() else json.dumps(name)[1:-1]


def _entries(data: Any) -> list[Mapping[str, str]]:
    if not isinstance(data, dict) or not isinstance(data.get("labels", []), list):
        raise ValueError('expected {"labels": [{"name": "value"}, ...]}')
    entries = data.get("labels", [])
    for entry in entries:
        if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
            raise ValueError(f"{json.dumps(entry)[:80]} is not an object of string values")
    return entries


def relabelled(
    host: DockerHost, image_id: str, labels: Mapping[str, str], build_id: str, sink: LogSink
) -> str:
    """A new image of image_id with labels added (a build of FROM alone, labels as given)."""
    return build_on(
        host, image_id, build_id=build_id, stage="labels", lines=[], labels=labels, sink=sink
    )
