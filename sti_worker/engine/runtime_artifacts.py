"""s2i's runtime images on the engine: which artifacts, where assemble-runtime is, and the
artifacts as tar parts for the runtime container's WORKDIR (sti/runtime_artifacts.py parses)."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from sti.errors import BuildFailed, InvalidImage, InvalidInput
from sti.runtime_artifacts import (
    ASSEMBLE_INPUT_FILES_LABEL,
    RuntimeArtifact,
    parse_assemble_input_files,
    parse_runtime_artifacts,
)
from sti.tarstreams import TarPart, empty_directory

from .docker_host import DockerHost, PathStat, container_name
from .protocol import Scripts

ASSEMBLE_RUNTIME = "assemble-runtime"


def artifacts_for(
    given: Sequence[str],
    runtime_name: str,
    runtime_config: Mapping[str, Any],
    builder_config: Mapping[str, Any],
) -> list[RuntimeArtifact]:
    """--runtime-artifact if given, else the runtime image's assemble-input-files label (s2i's
    place for it), else the builder's."""
    if given:
        return parse_runtime_artifacts(list(given))
    for config, whose in ((runtime_config, runtime_name), (builder_config, "the builder")):
        value = (config.get("Labels") or {}).get(ASSEMBLE_INPUT_FILES_LABEL)
        if value:
            origin = f"label {ASSEMBLE_INPUT_FILES_LABEL} of {whose}"
            try:
                return parse_assemble_input_files(str(value), origin)
            except InvalidInput as error:
                raise InvalidImage(error.message) from error
    raise InvalidInput(
        f"--runtime-image {runtime_name} needs --runtime-artifact SRC[:DEST], or the "
        f"{ASSEMBLE_INPUT_FILES_LABEL} label on it or on the builder"
    )


def assemble_runtime_path(scripts: Scripts) -> str:
    """assemble-runtime sits with the runtime image's run script (its scripts-url)."""
    return posixpath.join(posixpath.dirname(scripts.run), ASSEMBLE_RUNTIME)


def check_assemble_runtime(
    docker: DockerHost, image_id: str, name: str, scripts: Scripts, build_id: str
) -> str:
    path = assemble_runtime_path(scripts)

    def look() -> PathStat:
        role = "assemble-runtime-check"
        container = docker.create_container(
            image_id, [path], name=container_name(build_id, role), build_id=build_id
        )
        try:
            return docker.stat(container, path)
        finally:
            docker.remove_container(container)

    found = docker.image_fact(image_id, (ASSEMBLE_RUNTIME, path), look)
    if not (found.exists and found.is_file and found.executable):
        raise InvalidImage(f"Runtime image {name} failed validation: missing {path}")
    return path


def artifact_parts(
    docker: DockerHost, container: str, artifacts: Sequence[RuntimeArtifact]
) -> list[TarPart]:
    """Each artifact out of container (the image assemble made, never started) under its
    destination, modes as s2i gives them (0755 for directories and executables, else 0644)."""
    parts: list[TarPart] = []
    for artifact in artifacts:
        if not docker.stat(container, artifact.source).exists:
            raise BuildFailed(
                f"runtime artifact {artifact.source} is not in the image assemble made"
            )
        name = posixpath.basename(artifact.source)
        prefix = ""
        for directory in artifact.destination.split("/") if artifact.destination else []:
            prefix = f"{prefix}{directory}"
            parts.append(empty_directory(prefix))
            prefix += "/"
        parts.append(
            docker.archive_part(container, artifact.source, f"{prefix}{name}", s2i_modes=True)
        )
    return parts
