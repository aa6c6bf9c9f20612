"""The two builder-image layouts, one strategy each (the pipeline asks, never branches on them).

- The original sti layout: /usr/bin/prepare, run and save-artifacts; inputs in /tmp;
  save-artifacts fills /tmp/artifacts, which sti takes out of the stopped container, or which a
  stage of a BuildKit build makes, so the artifacts never leave the engine; scripts from
  elsewhere (a source's .s2i/bin, a --scripts-url) are for s2i images and left alone.
- s2i: assemble, run, save-artifacts and usage in the directory a scripts URL or label names
  (else /usr/libexec/s2i); inputs in the destination (--destination, else the
  io.openshift.s2i.destination label, else /tmp); save-artifacts writes a tar of the artifacts
  to its stdout; a source's .s2i/bin and a --scripts-url bring scripts of their own; assemble
  may ask for labels in <destination>/.s2i/image_metadata.json.

Where an image's scripts are is protocol.inspect_scripts; Scripts.layout names the strategy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sti.errors import InvalidInput
from sti.model import check_destination

from .docker_host import DockerHost, LogSink, container_name
from .image_metadata import metadata_labels
from .protocol import ARTIFACTS_DIR, Scripts

DESTINATION_LABEL = "io.openshift.s2i.destination"
DEFAULT_DESTINATION = "/tmp"


@dataclass(frozen=True)
class SavedOutput:
    """What save-artifacts left: its exit code and last lines, and the artifacts, in a stopped
    container's ARTIFACTS_DIR or in a tar file (None of either when it failed)."""

    exit_code: int
    last_lines: list[str]
    container: str | None = None
    tar: str | None = None


class Layout(Protocol):
    name: str
    takes_brought_scripts: bool  # a source's .s2i/bin or a --scripts-url applies

    def destination(self, image: str, config: Mapping[str, Any], given: str | None) -> str:
        """Where the build's inputs (src, artifacts, scripts) go in this image."""
        ...

    def saves_in_build_stage(self, artifacts_dir_empty: bool) -> bool:
        """Whether a BuildKit build can run save-artifacts in a stage of its own."""
        ...

    def save_artifacts(
        self, host: DockerHost, image: str, script: str, build_id: str, workdir: Path, sink: LogSink
    ) -> SavedOutput:
        """Run save-artifacts in a container of image and keep what it saved."""
        ...

    def requested_labels(
        self, host: DockerHost, image: str, destination: str, build_id: str, sink: LogSink
    ) -> dict[str, str]:
        """The labels the image prepare made asks for."""
        ...


class OriginalLayout:
    name = "sti"
    takes_brought_scripts = False

    def destination(self, image: str, config: Mapping[str, Any], given: str | None) -> str:
        if given:
            raise InvalidInput(
                f"--destination applies to s2i builder images; {image} has the original layout "
                "(/usr/bin/prepare), whose inputs are in /tmp"
            )
        return DEFAULT_DESTINATION

    def saves_in_build_stage(self, artifacts_dir_empty: bool) -> bool:
        # an image of the legacy builder keeps older artifacts in its /tmp/artifacts
        return artifacts_dir_empty

    def save_artifacts(
        self, host: DockerHost, image: str, script: str, build_id: str, workdir: Path, sink: LogSink
    ) -> SavedOutput:
        container = _save_container(host, image, script, build_id)
        try:
            exit_code, last_lines = host.run_to_completion(container, sink)
        except BaseException:
            host.remove_container(container)
            raise
        if exit_code != 0:
            host.remove_container(container)
            return SavedOutput(exit_code, last_lines)
        return SavedOutput(exit_code, last_lines, container=container)

    def requested_labels(
        self, host: DockerHost, image: str, destination: str, build_id: str, sink: LogSink
    ) -> dict[str, str]:
        return {}


class S2iLayout:
    name = "s2i"
    takes_brought_scripts = True

    def destination(self, image: str, config: Mapping[str, Any], given: str | None) -> str:
        if given:
            return given
        label = (config.get("Labels") or {}).get(DESTINATION_LABEL)
        if not label:
            return DEFAULT_DESTINATION
        return check_destination(str(label), f"the {DESTINATION_LABEL} label of {image}")

    def saves_in_build_stage(self, artifacts_dir_empty: bool) -> bool:
        return False  # its artifacts come on stdout, which a build stage cannot keep

    def save_artifacts(
        self, host: DockerHost, image: str, script: str, build_id: str, workdir: Path, sink: LogSink
    ) -> SavedOutput:
        container = _save_container(host, image, script, build_id)
        tar = workdir / "artifacts.tar"
        try:
            exit_code, last_lines = host.run_capturing_stdout(container, tar, sink)
        finally:
            host.remove_container(container)
        return SavedOutput(exit_code, last_lines, tar=str(tar) if exit_code == 0 else None)

    def requested_labels(
        self, host: DockerHost, image: str, destination: str, build_id: str, sink: LogSink
    ) -> dict[str, str]:
        return metadata_labels(host, image, destination, build_id, sink)


def _save_container(host: DockerHost, image: str, script: str, build_id: str) -> str:
    """A container of image to run save-artifacts in, with an empty ARTIFACTS_DIR of its own."""
    return host.create_container(
        image,
        [script],
        name=container_name(build_id, "artifacts"),
        build_id=build_id,
        empty_volumes_at=[ARTIFACTS_DIR],
    )


ORIGINAL_LAYOUT = OriginalLayout()
S2I_LAYOUT = S2iLayout()
_LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (ORIGINAL_LAYOUT, S2I_LAYOUT)}


def layout_of(scripts: Scripts) -> Layout:
    return _LAYOUTS[scripts.kind]
