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

Artifacts that leave the engine go into the next build through the checks of an uploaded source
(artifacts_in_container, artifacts_in_tar): save-artifacts is the submitter's code.

Where an image's scripts are is protocol.inspect_scripts; Scripts.layout names the strategy.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from sti.errors import InvalidInput, SaveArtifactsFailed
from sti.model import check_destination
from sti.tarstreams import IterReader, TarPart

from .archives import ExtractLimits, retar_tar_stream
from .docker_host import DockerHost, LogSink, OutputTooLarge, container_name
from .image_metadata import metadata_labels
from .methods import ArtifactsNotSaved
from .protocol import ARTIFACTS_DIR, Scripts

DESTINATION_LABEL = "io.openshift.s2i.destination"
DEFAULT_DESTINATION = "/tmp"
ARTIFACTS_INPUT = "artifacts"  # the artifacts' directory among prepare's inputs
# how a compressed stream begins, for tar kinds (tarfile's "r|*" took these too)
_COMPRESSED = ((b"\x1f\x8b", "tar.gz"), (b"BZh", "tar.bz2"), (b"\xfd7zXZ\x00", "tar.xz"))


@dataclass(frozen=True)
class SavedOutput:
    """What save-artifacts left: its exit code and last lines, and the artifacts, in a stopped
    container's ARTIFACTS_DIR or in a tar file (None of either when it failed)."""

    exit_code: int
    last_lines: list[str]
    container: str | None = None
    tar: str | None = None
    # container is an s2i save-artifacts not run yet: it runs while its stdout goes into the
    # build (artifacts_from_stdout)
    on_stdout: bool = False


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
        self,
        host: DockerHost,
        image: str,
        script: str,
        build_id: str,
        workdir: Path,
        sink: LogSink,
        limits: ExtractLimits,
        user: str | None = None,
        *,
        streamed: bool = False,
    ) -> SavedOutput:
        """Run save-artifacts in a container of image (as user, else its USER) and keep what it
        saved (held to the limits of a source). streamed: prepare runs in a container, which
        the artifacts may reach straight from save-artifacts' own (an s2i one only then runs)."""
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
        self,
        host: DockerHost,
        image: str,
        script: str,
        build_id: str,
        workdir: Path,
        sink: LogSink,
        limits: ExtractLimits,
        user: str | None = None,
        *,
        streamed: bool = False,
    ) -> SavedOutput:
        """The artifacts stay in the container, checked as they go into the build
        (artifacts_in_container)."""
        container = _save_container(host, image, script, build_id, user)
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
        self,
        host: DockerHost,
        image: str,
        script: str,
        build_id: str,
        workdir: Path,
        sink: LogSink,
        limits: ExtractLimits,
        user: str | None = None,
        *,
        streamed: bool = False,
    ) -> SavedOutput:
        """Streamed, save-artifacts runs while its stdout goes into prepare's container
        (artifacts_from_stdout); else the stream goes to a file of the work dir, at most
        STI_SOURCE_MAX_BYTES of it, and is checked as it goes into the build
        (artifacts_in_tar)."""
        container = _save_container(host, image, script, build_id, user)
        if streamed:
            return SavedOutput(0, [], container=container, on_stdout=True)
        tar = workdir / "artifacts.tar"
        try:
            exit_code, last_lines = host.run_capturing_stdout(
                container, tar, sink, limits.max_total_bytes
            )
        except OutputTooLarge as error:
            tar.unlink(missing_ok=True)
            raise SaveArtifactsFailed(
                f"{script} wrote more than {limits.max_total_bytes} bytes of artifacts to its "
                "stdout, the limit of a source (STI_SOURCE_MAX_BYTES)"
            ) from error
        finally:
            host.remove_container(container)
        return SavedOutput(exit_code, last_lines, tar=str(tar) if exit_code == 0 else None)

    def requested_labels(
        self, host: DockerHost, image: str, destination: str, build_id: str, sink: LogSink
    ) -> dict[str, str]:
        return metadata_labels(host, image, destination, build_id, sink)


def _save_container(
    host: DockerHost, image: str, script: str, build_id: str, user: str | None
) -> str:
    """A container of image to run save-artifacts in (as user, else the image's USER), with an
    empty ARTIFACTS_DIR of its own."""
    return host.create_container(
        image,
        [script],
        name=container_name(build_id, "artifacts"),
        build_id=build_id,
        empty_volumes_at=[ARTIFACTS_DIR],
        user=user,
    )


def artifacts_in_container(host: DockerHost, container: str, limits: ExtractLimits) -> TarPart:
    """The artifacts save-artifacts left in the stopped container's ARTIFACTS_DIR, as prepare's
    artifacts input."""

    def add(tar: tarfile.TarFile) -> None:
        with host.archive(container, ARTIFACTS_DIR) as archive:
            _add_checked(tar, IterReader(archive), "tar", "artifacts", limits)

    return add


def artifacts_from_stdout(
    host: DockerHost, container: str, script: str, sink: LogSink, limits: ExtractLimits
) -> TarPart:
    """The artifacts an s2i save-artifacts writes to stdout, run in the created container as
    they go into the build: never on the worker's disk. Its stdout is held to
    STI_SOURCE_MAX_BYTES as a whole, what follows its tar included; a failure mid-way raises
    ArtifactsNotSaved, and the build runs again clean (see pipeline._prepared)."""

    def add(tar: tarfile.TarFile) -> None:
        ended: list[tuple[int, list[str]]] = []
        stdout = _Capped(host.stdout_chunks(container, sink, ended), script, limits)
        try:
            head = stdout.head(8)
            kind = next((kind for magic, kind in _COMPRESSED if head.startswith(magic)), "tar")
            try:
                _add_checked(tar, IterReader(stdout), kind, "", limits)
            except SaveArtifactsFailed:
                if stdout.over_cap:
                    raise
                stdout.drain()  # a script that failed is a clean build, whatever it wrote
                _check_exit(script, ended)
                raise
            stdout.drain()
        finally:
            stdout.close()
        _check_exit(script, ended)

    return add


def _check_exit(script: str, ended: list[tuple[int, list[str]]]) -> None:
    exit_code, last_lines = ended[0]
    if exit_code != 0:
        raise ArtifactsNotSaved(f"{script} exited with code {exit_code}", details=last_lines)


class _Capped:
    """stdout's chunks, counted against STI_SOURCE_MAX_BYTES, with a look at the first bytes."""

    def __init__(self, chunks: Iterator[bytes], script: str, limits: ExtractLimits) -> None:
        self._chunks = chunks
        self._script = script
        self._max_bytes = limits.max_total_bytes
        self._read = 0
        self._held: list[bytes] = []
        self.over_cap = False

    def head(self, size: int) -> bytes:
        """At least size bytes from the start (fewer only if stdout ends), read again after."""
        while sum(map(len, self._held)) < size:
            try:
                self._held.append(self._pull())
            except StopIteration:
                break
        return b"".join(self._held)[:size]

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return self._held.pop(0) if self._held else self._pull()

    def _pull(self) -> bytes:
        chunk = next(self._chunks)
        self._read += len(chunk)
        if self._read > self._max_bytes:
            self.over_cap = True
            raise SaveArtifactsFailed(
                f"{self._script} wrote more than {self._max_bytes} bytes of artifacts to its "
                "stdout, the limit of a source (STI_SOURCE_MAX_BYTES)"
            )
        return chunk

    def drain(self) -> None:
        """What follows the tar, to the end (within the cap): the exit code comes after it."""
        for _ in self:
            pass

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close:
            close()


def artifacts_in_tar(path: Path, limits: ExtractLimits) -> TarPart:
    """The artifacts an s2i save-artifacts wrote (a tar, plain or compressed), as prepare's
    artifacts input."""

    def add(tar: tarfile.TarFile) -> None:
        with path.open("rb") as file:
            start = file.peek(8)
            kind = next((kind for magic, kind in _COMPRESSED if start.startswith(magic)), "tar")
            _add_checked(tar, file, kind, "", limits)

    return add


def _add_checked(
    tar: tarfile.TarFile, stream: BinaryIO | IterReader, kind: str, root: str, limits: ExtractLimits
) -> None:
    """A tar stream's members below root, under ARTIFACTS_INPUT, through the checks of an
    uploaded source (names, links, entries written through links, STI_SOURCE_MAX_FILES entries,
    STI_SOURCE_MAX_BYTES of content): the previous image's save-artifacts is the submitter's
    code, its output as untrusted as a source."""
    try:
        retar_tar_stream(
            stream,
            kind,
            limits,
            tar,
            root=root,
            prefix=ARTIFACTS_INPUT,
            links_anywhere=True,
            keep_git_metadata=True,  # not a source: what the builder saved for the next build
        )
    except InvalidInput as error:
        raise SaveArtifactsFailed(
            f"the artifacts saved from the previous image were refused: {error.message}"
        ) from error


ORIGINAL_LAYOUT = OriginalLayout()
S2I_LAYOUT = S2iLayout()
_LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (ORIGINAL_LAYOUT, S2I_LAYOUT)}


def layout_of(scripts: Scripts) -> Layout:
    return _LAYOUTS[scripts.kind]
