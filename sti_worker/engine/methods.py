"""The two build methods behind one interface: each turns a base image plus inputs into an image.

`build` generates a Dockerfile and runs docker build; `run` runs prepare in a container and
commits it. Inputs are tar members named src/, artifacts/ and build/, placed under /tmp.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sti.errors import (
    BuildFailed,
    BuildStepFailed,
    CreateDockerfileFailed,
    InvalidInput,
)
from sti.model import BASE_REPOSITORY_PREFIX, BUILD_ID_PATTERN, check_destination
from sti.scripts_urls import read_capped
from sti.source_scripts import SOURCE_SCRIPTS_DIR, check_script_names
from sti.tarstreams import TarPart, empty_directory, retargeted, small_file, stream_tar
from sti.uid_ranges import is_plain_user

from . import build_env
from .docker_host import BUILD_ID_LABEL, DockerHost, LogSink, container_name
from .protocol import Scripts

_INPUT_DIRS = ("src", "artifacts", "build", "scripts")
_ARTIFACTS_STAGE = "sti-artifacts"
BUILD_ID_ARG = "STI_BUILD_ID"
BASE_ARG = "STI_BASE"  # the images a BuildKit build starts from, named by build arguments
PREVIOUS_ARG = "STI_PREVIOUS"
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
_IMAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# what names an attempt of a build: its id, then .<n> for one run again (pipeline.attempt_name)
_ATTEMPT_NAME = re.compile(rf"{BUILD_ID_PATTERN}(?:\.[1-9][0-9]{{0,2}})?")


@dataclass(frozen=True)
class PrepareSpec:
    """What one prepare run needs: the base image, inputs under /tmp, env, and who asks."""

    base_image: str
    inputs: Sequence[TarPart]
    input_dirs: Sequence[str]
    env: Mapping[str, str]
    build_id: str
    scripts: Scripts
    stage: str = "build"
    entrypoint: Sequence[str] | None = field(default=None)
    owner: tuple[int, int] | None = None  # the image's numeric USER owns the inputs
    user: str | None = None  # the image's USER as written
    input_root: str = "/tmp"  # where the inputs go (an s2i image's destination)
    run_as: str | None = None  # uid:gid that runs prepare, when not the image's USER
    source_scripts: Sequence[str] = ()  # copied from src/.s2i/bin to <input_root>/scripts
    saved_from: SavedArtifacts | None = None  # BuildKit: run save-artifacts inside the build
    labels: Mapping[str, str] = field(default_factory=dict)  # of the new image (provenance)
    build_env: Mapping[str, str] = field(default_factory=dict)  # for prepare only
    # inputs put at a directory of their own, as (directory, part); the container path only
    placed: Sequence[tuple[str, TarPart]] = ()


@dataclass(frozen=True)
class SavedArtifacts:
    """An earlier image whose save-artifacts a BuildKit build runs in a stage of its own, so the
    artifacts never leave the engine; its /tmp/artifacts is empty, as the script expects."""

    image: str
    script: str
    owner: tuple[int, int] | None = None
    workdir: str = "/"

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "script": self.script,
            "owner": list(self.owner) if self.owner else None,
            "workdir": self.workdir,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SavedArtifacts:
        owner = data.get("owner")
        return cls(
            image=str(data["image"]),
            script=str(data["script"]),
            owner=(int(owner[0]), int(owner[1])) if owner else None,
            workdir=str(data.get("workdir") or "/"),
        )


class ArtifactsNotSaved(BuildFailed):
    """save-artifacts failed inside the build: the build can go on clean."""


class BuildMethod(Protocol):
    name: str

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        """Run prepare on spec.base_image with the inputs in place; return the new image id."""
        ...


def prepare_failed(
    host: DockerHost,
    script: str,
    exit_code: int,
    last_lines: Sequence[str],
    oom_killed: bool = False,
) -> BuildFailed:
    details = [f"last output lines of {script}:", *last_lines] if last_lines else []
    killed = host.sandbox.killed_message(script, exit_code, oom_killed)
    message = killed or f"{script} exited with code {exit_code}"
    return BuildFailed(message, details=[*details, host.sandbox.describe()])


class EngineBuildMethod:
    """A generated Dockerfile, built by the engine's builder, BuildKit or the legacy one (both
    give the same image); prepare_ways decides when the engine's builder may run prepare."""

    name = "build"

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        assert host.builder in ("buildkit", "legacy"), "prepare_ways picks the engine's builder"
        assert not spec.placed, "placed inputs are for the container path"
        buildargs = {env_arg(index): value for index, value in enumerate(spec.env.values())}
        references: dict[str, str] = {}
        if host.builder == "buildkit":
            # BuildKit's FROM takes a name, not an id: tags of this build's own pin the images
            # that the earlier steps inspected
            references[spec.base_image] = base_reference(spec.build_id, spec.stage)
            if spec.saved_from:
                references[spec.saved_from.image] = base_reference(spec.build_id, "previous")
            for image, reference in references.items():
                host.tag(image, reference)
            dockerfile = buildkit_dockerfile(spec)
            buildargs[BUILD_ID_ARG] = spec.build_id
            buildargs[BASE_ARG] = references[spec.base_image]
            if spec.saved_from:
                buildargs[PREVIOUS_ARG] = references[spec.saved_from.image]
            labels = {**spec.labels, BUILD_ID_LABEL: spec.build_id}
        else:
            dockerfile = legacy_dockerfile(spec)
            labels = dict(spec.labels)
        parts = [small_file("Dockerfile", dockerfile.encode()), *spec.inputs]
        if spec.build_env:
            parts.append(build_env.context_part(spec.build_env))
        try:
            return host.build(
                lambda: stream_tar(parts), buildargs=buildargs, labels=labels, sink=sink
            )
        except BuildStepFailed as error:
            if _is_step(error.command, spec.scripts.prepare):
                raise prepare_failed(
                    host, spec.scripts.prepare, error.exit_code, error.details[1:]
                ) from error
            if spec.saved_from and _is_step(error.command, spec.saved_from.script):
                raise ArtifactsNotSaved(
                    f"{spec.saved_from.script} exited with code {error.exit_code}",
                    details=error.details[1:],
                ) from error
            raise
        finally:
            for reference in references.values():
                host.remove_reference(reference)


def build_on(
    host: DockerHost,
    image: str,
    *,
    build_id: str,
    stage: str,
    lines: Sequence[str],
    inputs: Sequence[TarPart] = (),
    labels: Mapping[str, str],
    sink: LogSink,
) -> str:
    """A build of FROM image then lines, with inputs in the context; image pinned by a name of
    this build's while it runs (FROM takes a name, and the same text each time is a cache hit)."""
    pinned = base_reference(build_id, stage)
    host.tag(image, pinned)
    dockerfile = "\n".join([f"ARG {BASE_ARG}", f"FROM ${{{BASE_ARG}}}", *lines]) + "\n"
    parts = [small_file("Dockerfile", dockerfile.encode()), *inputs]
    try:
        return host.build(
            lambda: stream_tar(parts), buildargs={BASE_ARG: pinned}, labels=labels, sink=sink
        )
    finally:
        host.remove_reference(pinned)


def _is_step(command: str, script: str) -> bool:
    """Whether the failed command is the step running script (and not, say, an ONBUILD trigger).
    The legacy builder names it `["/usr/bin/prepare"]`, BuildKit `[2/3] RUN ["/usr/bin/prepare"]`
    (`[3/3] RUN --mount=... ["/bin/sh", "-c", "...", "/usr/bin/prepare"]` with --build-env: the
    script is the last argument).
    """
    return command == script or command.endswith(f"{json.dumps(script)}]")


def _prepare_command(spec: PrepareSpec) -> list[str]:
    return build_env.prepare_command(spec.scripts.prepare, spec.input_root, spec.build_env)


def base_reference(build_id: str, stage: str) -> str:
    return f"{BASE_REPOSITORY_PREFIX}{build_id}:{stage}"


def exec_form(args: Sequence[str]) -> str:
    """args as the exec form of RUN, CMD and ENTRYPOINT (in a Dockerfile or a commit's changes):
    a JSON array, which the engine's parser decodes as JSON, so a quote, bracket, backslash, line
    break or $ in a path (a scripts-url label says where the scripts are) stays inside its own
    argument and adds no instruction; exec form expands no variables. A NUL is in no path."""
    for arg in args:
        if "\x00" in arg:
            raise _unwritable("the command argument", arg)
    return json.dumps(list(args))


def user_line(user: str) -> str:
    """A USER instruction; only a plain user or uid (optionally :group), as an image's USER or
    a resolved uid:gid is, can be written (users checks an image's USER when it is inspected)."""
    if not is_plain_user(user):
        raise _unwritable("the user", user)
    return f"USER {user}"


def _plain_path(path: str) -> str:
    """A path written as is into COPY, WORKDIR or a --mount flag (which expand $, and split at
    spaces and commas): an absolute directory of plain names only, as destinations are."""
    try:
        return check_destination(path, "the path")
    except InvalidInput:
        raise _unwritable("the path", path) from None


def _unwritable(what: str, value: str) -> CreateDockerfileFailed:
    return CreateDockerfileFailed(
        f"{what} {value[:200]!r} cannot be written into a Dockerfile as it is: "
        "it would not stay one value"
    )


def _env_lines(spec: PrepareSpec) -> list[str]:
    """ENV values arrive byte-exact and can never add instructions: they travel as build
    arguments and are only referenced here, because a Dockerfile cannot carry every value
    literally (a newline ends the instruction). The arguments get names of their own: an ENV
    the builder image sets would win over an argument of the same name. One ENV sets them all:
    its references are read before any of its assignments, so a variable the user names like
    an argument (STI_ENV_1) cannot change the value of another."""
    if not spec.env:
        return []
    for name in spec.env:
        if not _ENV_NAME.fullmatch(name):
            raise _unwritable("the environment variable name", name)
    lines = [f"ARG {env_arg(index)}" for index in range(len(spec.env))]
    pairs = [f'{name}="${{{env_arg(index)}}}"' for index, name in enumerate(spec.env)]
    return [*lines, "ENV " + " ".join(pairs)]


def chown_flag(spec: PrepareSpec) -> str:
    return f"--chown={int(spec.owner[0])}:{int(spec.owner[1])} " if spec.owner else ""


def legacy_dockerfile(spec: PrepareSpec) -> str:
    """For the legacy builder. The label comes first so that every intermediate image of a
    failed build can be found again."""
    if not _IMAGE_ID.fullmatch(spec.base_image):
        raise _unwritable("the image", spec.base_image)
    if not _ATTEMPT_NAME.fullmatch(spec.build_id):
        raise _unwritable("the build id", spec.build_id)
    lines = [f"FROM {spec.base_image}", f"LABEL {BUILD_ID_LABEL}={spec.build_id}"]
    lines += _env_lines(spec)
    root = _plain_path(spec.input_root)
    for name in _INPUT_DIRS:
        if name in spec.input_dirs:
            lines.append(f"COPY {chown_flag(spec)}{name} {root}/{name}")
    lines += script_copies(spec)
    if spec.run_as:
        lines.append(user_line(spec.run_as))
    lines.append(f"RUN {exec_form([spec.scripts.prepare])}")
    if spec.run_as:
        lines.append(user_line(spec.user or "0"))
    lines.append(f"CMD {exec_form([spec.scripts.run])}")
    return "\n".join(lines) + "\n"


def buildkit_dockerfile(spec: PrepareSpec) -> str:
    """For BuildKit. Restored artifacts are an input of prepare, not of the image: a stage of
    their own (from the context, or save-artifacts run in the earlier image), mounted
    (writable, changes discarded) at /tmp/artifacts for the prepare step only, so they are not
    stored twice. The source is copied before anything specific to this build, so an unchanged
    source is a cache hit; the build id argument makes prepare run every time.

    Nothing of one build (its id, the tags that pin its images) is written here but in build
    arguments and labels: the Dockerfile travels in the context, and BuildKit unpacks a context
    again unless it is the same bytes as before."""
    lines = [f"ARG {BASE_ARG}"]
    mount = ""
    root = _plain_path(spec.input_root)
    if spec.saved_from:
        lines.insert(0, f"ARG {PREVIOUS_ARG}")
        lines += _save_stage(spec.saved_from, f"${{{PREVIOUS_ARG}}}")
        mount = f"--mount=type=bind,from={_ARTIFACTS_STAGE},source=/tmp/artifacts,"
        mount += f"target={root}/artifacts,rw "
    elif "artifacts" in spec.input_dirs:
        lines += [f"FROM scratch AS {_ARTIFACTS_STAGE}", f"COPY {chown_flag(spec)}artifacts /"]
        mount = f"--mount=type=bind,from={_ARTIFACTS_STAGE},target={root}/artifacts,rw "
    lines.append(f"FROM ${{{BASE_ARG}}}")
    for name in ("src", "build", "scripts"):
        if name in spec.input_dirs:
            lines.append(f"COPY {chown_flag(spec)}{name} {root}/{name}")
    lines += script_copies(spec)
    lines.append(f"ARG {BUILD_ID_ARG}")
    lines += _env_lines(spec)
    runner = spec.run_as or (f"{spec.owner[0]}:{spec.owner[1]}" if spec.owner else None)
    if runner:
        # BuildKit looks a uid without a gid up in /etc/passwd, which builder images need not
        # have; the image keeps its USER as written
        lines.append(user_line(runner))
    if spec.build_env:
        mount += build_env.buildkit_mount(root)
    lines.append(f"RUN {mount}{exec_form(_prepare_command(spec))}")
    if runner and (spec.user or spec.run_as):
        lines.append(user_line(spec.user or "0"))
    lines.append(f"CMD {exec_form([spec.scripts.run])}")
    return "\n".join(lines) + "\n"


def script_copies(spec: PrepareSpec) -> list[str]:
    """The source's own s2i scripts, where s2i puts them: <destination>/scripts."""
    root = _plain_path(spec.input_root)
    return [
        f"COPY {chown_flag(spec)}src/{SOURCE_SCRIPTS_DIR}/{name} {root}/scripts/{name}"
        for name in check_script_names(spec.source_scripts)
    ]


def _save_stage(saved: SavedArtifacts, reference: str) -> list[str]:
    """save-artifacts in the earlier image, as the original runs it: its own user, no
    ENTRYPOINT (RUN has none), /tmp/artifacts there (WORKDIR makes it) and empty."""
    workdir = saved.workdir if _PLAIN_PATH.fullmatch(saved.workdir) else "/"
    lines = [f"FROM {reference} AS {_ARTIFACTS_STAGE}", "WORKDIR /tmp/artifacts"]
    lines.append(f"WORKDIR {workdir}")
    if saved.owner:
        lines.append(user_line(f"{int(saved.owner[0])}:{int(saved.owner[1])}"))
    lines.append(f"RUN {exec_form([saved.script])}")
    return lines


def env_arg(index: int) -> str:
    return f"STI_ENV_{index}"


class ContainerMethod:
    """prepare in a container, committed. Restored artifacts go into an anonymous volume at
    /tmp/artifacts: a commit leaves volumes out, so they are not stored in the image twice (and
    build-only values, in a volume of their own, not at all)."""

    name = "run"

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        root = spec.input_root
        volumes = [f"{root}/artifacts"] if "artifacts" in spec.input_dirs else []
        inputs = list(spec.inputs)
        if spec.build_env:
            volumes.append(build_env.mount_point(root))
            inputs += build_env.volume_parts(spec.build_env)
        container = host.create_container(
            spec.base_image,
            _prepare_command(spec),
            name=container_name(spec.build_id, f"{spec.stage}-prepare"),
            build_id=spec.build_id,
            env=spec.env,
            empty_volumes_at=volumes,
            labels=spec.labels,  # a committed container's labels are its image's
            user=spec.run_as,
        )
        try:
            if spec.input_root != "/tmp":  # an s2i destination may not exist; /tmp does
                make_directory(host, container, spec.input_root, spec.owner)
            put_inputs(host, container, spec, inputs)
            for directory, part in spec.placed:
                host.put_archive(container, directory, stream_tar([part]))
            exit_code, last_lines = host.run_to_completion(container, sink)
            if exit_code != 0:
                oom = host.oom_killed(container)
                raise prepare_failed(host, spec.scripts.prepare, exit_code, last_lines, oom)
            return host.commit(container, commit_changes(spec))
        finally:
            host.remove_container(container)


def commit_changes(spec: PrepareSpec) -> list[str]:
    """The config a prepare container is committed with: run as CMD, the image's USER back when
    another ran prepare, its ENTRYPOINT. The engine parses the changes as Dockerfile lines joined
    by line breaks, so they are written as a Dockerfile is."""
    changes = [f"CMD {exec_form([spec.scripts.run])}"]
    if spec.run_as:  # the container's user is the image's, as committed
        changes.append(user_line(spec.user or "0"))
    if spec.entrypoint:
        changes.append(f"ENTRYPOINT {exec_form(spec.entrypoint)}")
    return changes


def make_directory(
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


def put_inputs(
    host: DockerHost, container: str, spec: PrepareSpec, inputs: Sequence[TarPart]
) -> None:
    """inputs into the (not yet started) container at spec.input_root, owned by spec.owner;
    then the source's own s2i scripts copied within it to <input_root>/scripts."""
    host.put_archive(container, spec.input_root, stream_tar(inputs, owner=spec.owner))
    if spec.source_scripts:
        host.put_archive(container, spec.input_root, _scripts_from_source(host, container, spec))


def _scripts_from_source(host: DockerHost, container: str, spec: PrepareSpec) -> Iterator[bytes]:
    """The source's own s2i scripts, copied within the (not yet started) container from
    <root>/src/.s2i/bin to <root>/scripts. Each is read whole before the copy is written: the
    engine serves one archive call on a container at a time."""
    parts = [empty_directory("scripts")]
    for name in spec.source_scripts:
        path = f"{spec.input_root}/src/{SOURCE_SCRIPTS_DIR}/{name}"
        with host.archive(container, path) as chunks:  # closed if read_capped refuses
            read = read_capped(chunks, path)
        parts.append(retargeted(lambda read=read: [read], name, f"scripts/{name}"))
    return stream_tar(parts, owner=spec.owner)
