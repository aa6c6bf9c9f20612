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
    source_parts = source.rstrip("/").split("/")
    if not source.startswith("/") or source.rstrip("/") == "" or _climbs(source_parts[1:]):
        raise InvalidInput(f"{origin} {text!r}: SRC must be an absolute path below /, without ..")
    destination = destination.strip("/") if destination not in ("", ".") else ""
    if text.partition(":")[2].startswith("/") or _climbs(destination.split("/")):
        raise InvalidInput(f"{origin} {text!r}: DEST must be a relative directory, without ..")
    normalized = posixpath.normpath(destination) if destination else ""
    return RuntimeArtifact(source.rstrip("/"), "" if normalized == "." else normalized)


def parse_assemble_input_files(value: str, origin: str) -> list[RuntimeArtifact]:
    found = [parse_runtime_artifact(item.strip(), origin) for item in value.split(";")]
    return _at_most(found, origin)


def parse_runtime_artifacts(texts: tuple[str, ...] | list[str]) -> list[RuntimeArtifact]:
    return _at_most([parse_runtime_artifact(text) for text in texts], "--runtime-artifact")


def _at_most(found: list[RuntimeArtifact], origin: str) -> list[RuntimeArtifact]:
    if len(found) > MAX_ARTIFACTS:
        raise InvalidInput(f"{origin}: {len(found)} artifacts; at most {MAX_ARTIFACTS} are allowed")
    return found


def _climbs(parts: list[str]) -> bool:
    return any(part in ("..",) for part in parts) or any(part == "" for part in parts[:-1])
