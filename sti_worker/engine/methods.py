"""The two build methods behind one interface: each turns a base image plus inputs into an image.

`build` generates a Dockerfile and runs docker build; `run` runs prepare in a container and
commits it. Inputs are tar members named src/, artifacts/ and build/, placed under /tmp.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .docker_host import BUILD_ID_LABEL, DockerHost, LogSink, container_name
from .errors import BuildFailed, BuildStepFailed, InvalidBuildMethod
from .protocol import Scripts
from .tarstreams import TarPart, small_file, stream_tar

_INPUT_DIRS = ("src", "artifacts", "build")
_ARTIFACTS_STAGE = "sti-artifacts"
BUILD_ID_ARG = "STI_BUILD_ID"
BASE_REPOSITORY_PREFIX = "sti-base-"


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


class BuildMethod(Protocol):
    name: str

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        """Run prepare on spec.base_image with the inputs in place; return the new image id."""
        ...


def prepare_failed(script: str, exit_code: int, last_lines: Sequence[str]) -> BuildFailed:
    details = [f"last output lines of {script}:", *last_lines] if last_lines else []
    return BuildFailed(f"{script} exited with code {exit_code}", details=details)


class DockerfileMethod:
    """A generated Dockerfile, built with BuildKit where the engine has it, else the legacy
    builder; both give the same image."""

    name = "build"

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        buildargs = {env_arg(index): value for index, value in enumerate(spec.env.values())}
        if host.builder == "buildkit":
            # BuildKit's FROM takes a name, not an id: a tag of this build's own pins the
            # image that check_images inspected
            base = base_reference(spec.build_id, spec.stage)
            host.tag(spec.base_image, base)
            dockerfile = buildkit_dockerfile(spec, base)
            buildargs[BUILD_ID_ARG] = spec.build_id
        else:
            base = None
            dockerfile = legacy_dockerfile(spec)
        context = stream_tar([small_file("Dockerfile", dockerfile.encode()), *spec.inputs])
        try:
            return host.build(context, buildargs=buildargs, sink=sink)
        except BuildStepFailed as error:
            if _is_prepare(error.command, spec.scripts.prepare):
                raise prepare_failed(
                    spec.scripts.prepare, error.exit_code, error.details[1:]
                ) from error
            raise
        finally:
            if base:
                host.remove_reference(base)


def _is_prepare(command: str, prepare: str) -> bool:
    """Whether the failed command is the prepare step (and not, say, an ONBUILD trigger).
    The legacy builder names it `["/usr/bin/prepare"]`, BuildKit `[2/3] RUN ["/usr/bin/prepare"]`.
    """
    quoted = json.dumps([prepare])
    return command == prepare or command.endswith(quoted)


def base_reference(build_id: str, stage: str) -> str:
    return f"{BASE_REPOSITORY_PREFIX}{build_id}:{stage}"


def _env_lines(spec: PrepareSpec) -> list[str]:
    """ENV values arrive byte-exact and can never add instructions: they travel as build
    arguments and are only referenced here, because a Dockerfile cannot carry every value
    literally (a newline ends the instruction). The arguments get names of their own: an ENV
    the builder image sets would win over an argument of the same name."""
    lines = []
    for index, name in enumerate(spec.env):
        lines += [f"ARG {env_arg(index)}", f'ENV {name}="${{{env_arg(index)}}}"']
    return lines


def _chown(spec: PrepareSpec) -> str:
    return f"--chown={spec.owner[0]}:{spec.owner[1]} " if spec.owner else ""


def legacy_dockerfile(spec: PrepareSpec) -> str:
    """For the legacy builder. The label comes first so that every intermediate image of a
    failed build can be found again."""
    lines = [f"FROM {spec.base_image}", f"LABEL {BUILD_ID_LABEL}={spec.build_id}"]
    lines += _env_lines(spec)
    for name in _INPUT_DIRS:
        if name in spec.input_dirs:
            lines.append(f"COPY {_chown(spec)}{name} /tmp/{name}")
    lines += [f'RUN ["{spec.scripts.prepare}"]', f'CMD ["{spec.scripts.run}"]']
    return "\n".join(lines) + "\n"


def buildkit_dockerfile(spec: PrepareSpec, base: str) -> str:
    """For BuildKit. Restored artifacts are an input of prepare, not of the image: a stage of
    their own, mounted (writable, changes discarded) at /tmp/artifacts for the prepare step
    only, so they are not stored twice. The source is copied before anything specific to this
    build, so an unchanged source is a cache hit; the build id argument makes prepare run
    every time."""
    lines = []
    mount = ""
    if "artifacts" in spec.input_dirs:
        lines += [f"FROM scratch AS {_ARTIFACTS_STAGE}", f"COPY {_chown(spec)}artifacts /"]
        mount = f"--mount=type=bind,from={_ARTIFACTS_STAGE},target=/tmp/artifacts,rw "
    lines.append(f"FROM {base}")
    for name in ("src", "build"):
        if name in spec.input_dirs:
            lines.append(f"COPY {_chown(spec)}{name} /tmp/{name}")
    lines.append(f"ARG {BUILD_ID_ARG}")
    lines += _env_lines(spec)
    if spec.owner:
        # BuildKit looks a uid without a gid up in /etc/passwd, which builder images need not
        # have; the image keeps its USER as written
        lines.append(f"USER {spec.owner[0]}:{spec.owner[1]}")
    lines.append(f'RUN {mount}["{spec.scripts.prepare}"]')
    if spec.owner and spec.user:
        lines.append(f"USER {spec.user}")
    lines += [f"LABEL {BUILD_ID_LABEL}={spec.build_id}", f'CMD ["{spec.scripts.run}"]']
    return "\n".join(lines) + "\n"


def env_arg(index: int) -> str:
    return f"STI_ENV_{index}"


class ContainerMethod:
    """prepare in a container, committed. Restored artifacts go into an anonymous volume at
    /tmp/artifacts: a commit leaves volumes out, so they are not stored in the image twice."""

    name = "run"

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        container = host.create_container(
            spec.base_image,
            [spec.scripts.prepare],
            name=container_name(spec.build_id, f"{spec.stage}-prepare"),
            build_id=spec.build_id,
            env=spec.env,
            empty_volume_at="/tmp/artifacts" if "artifacts" in spec.input_dirs else None,
        )
        try:
            host.put_archive(container, "/tmp", stream_tar(spec.inputs, owner=spec.owner))
            exit_code, last_lines = host.run_to_completion(container, sink)
            if exit_code != 0:
                raise prepare_failed(spec.scripts.prepare, exit_code, last_lines)
            changes = [f'CMD ["{spec.scripts.run}"]']
            if spec.entrypoint:
                changes.append(f"ENTRYPOINT {json.dumps(list(spec.entrypoint))}")
            return host.commit(container, changes)
        finally:
            host.remove_container(container)


_METHODS: dict[str, Callable[[], BuildMethod]] = {
    "build": DockerfileMethod,
    "run": ContainerMethod,
}


def method_named(name: str) -> BuildMethod:
    try:
        return _METHODS[name]()
    except KeyError:
        raise InvalidBuildMethod(
            f"build method {name!r} is unknown; use one of: {', '.join(_METHODS)}"
        ) from None
