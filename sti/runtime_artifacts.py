"""s2i's runtime artifacts: what a --runtime-image build copies out of the image assemble made
into the runtime image's WORKDIR, as `SRC[:DEST]` (--runtime-artifact) or `;`-separated in the
io.openshift.s2i.assemble-input-files label. SRC is an absolute file or directory; DEST a
directory relative to WORKDIR ("." or nothing for WORKDIR itself). No wildcards, no "..", no
colons in either: the paths go to the Engine API as they are written."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .errors import InvalidInput

ASSEMBLE_INPUT_FILES_LABEL = "io.openshift.s2i.assemble-input-files"
MAX_ARTIFACTS = 64
_MAX_PATH = 1024
_FORBIDDEN = set("*?[\\\0\n\r")


@dataclass(frozen=True)
class RuntimeArtifact:
    source: str  # absolute, without a trailing slash
    destination: str  # relative to WORKDIR, "" for WORKDIR itself

    def __str__(self) -> str:
        return f"{self.source}:{self.destination or '.'}"


def parse_runtime_artifact(text: str, origin: str = "--runtime-artifact") -> RuntimeArtifact:
    if not isinstance(text, str) or len(text) > _MAX_PATH or _FORBIDDEN & set(text):
        raise InvalidInput(f"{origin} {str(text)[:200]!r} is not SRC[:DEST] without wildcards")
    source, _, destination = text.partition(":")
    if ":" in destination:
        raise InvalidInput(f"{origin} {text!r} has more than one ':'")
    source = source.rstrip("/")
    if not source.startswith("/") or _climbs(source[1:]):
        raise InvalidInput(f"{origin} {text!r}: SRC must be an absolute path below /, without ..")
    if destination and (destination.startswith("/") or _climbs(destination.rstrip("/"))):
        raise InvalidInput(f"{origin} {text!r}: DEST must be a relative directory, without ..")
    destination = posixpath.normpath(destination) if destination else "."
    return RuntimeArtifact(source, "" if destination == "." else destination)


def parse_assemble_input_files(value: str, origin: str) -> list[RuntimeArtifact]:
    found = [parse_runtime_artifact(item.strip(), origin) for item in value.split(";")]
    return _at_most(found, origin)


def parse_runtime_artifacts(texts: tuple[str, ...] | list[str]) -> list[RuntimeArtifact]:
    return _at_most([parse_runtime_artifact(text) for text in texts], "--runtime-artifact")


def _at_most(found: list[RuntimeArtifact], origin: str) -> list[RuntimeArtifact]:
    if len(found) > MAX_ARTIFACTS:
        raise InvalidInput(f"{origin}: {len(found)} artifacts; at most {MAX_ARTIFACTS} are allowed")
    return found


def _climbs(path: str) -> bool:
    """An empty path, or one with a ".." or an empty part (a doubled slash)."""
    parts = path.split("/")
    return ".." in parts or "" in parts
