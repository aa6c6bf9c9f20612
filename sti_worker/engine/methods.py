"""The two build methods behind one interface: each turns a base image plus inputs into an image.

`build` generates a Dockerfile and runs docker build; `run` runs prepare in a container and
commits it. Inputs are tar members named src/, artifacts/ and build/, placed under /tmp.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .docker_host import BUILD_ID_LABEL, DockerHost, LogSink, container_name
from .errors import BuildFailed, InvalidBuildMethod
from .protocol import Scripts
from .tarstreams import TarPart, small_file, stream_tar

_INPUT_DIRS = ("src", "artifacts", "build")


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


class BuildMethod(Protocol):
    name: str

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        """Run prepare on spec.base_image with the inputs in place; return the new image id."""
        ...


def prepare_failed(script: str, exit_code: int, last_lines: Sequence[str]) -> BuildFailed:
    details = [f"last output lines of {script}:", *last_lines] if last_lines else []
    return BuildFailed(f"{script} exited with code {exit_code}", details=details)


def _prepare_failed_pattern(script: str) -> re.Pattern[str]:
    """docker build's message when the prepare step, and not another step, exits non-zero."""
    quoted = r"(?:\[\")?" + re.escape(script) + r"(?:\"\])?"
    return re.compile(rf"The command '{quoted}' returned a non-zero code: (\d+)")


class DockerfileMethod:
    name = "build"

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        dockerfile = dockerfile_for(spec)
        context = stream_tar([small_file("Dockerfile", dockerfile.encode()), *spec.inputs])
        try:
            buildargs = {env_arg(index): value for index, value in enumerate(spec.env.values())}
            return host.build(context, buildargs=buildargs, sink=sink)
        except BuildFailed as error:
            code = _prepare_failed_pattern(spec.scripts.prepare).search(error.message)
            if code:
                raise prepare_failed(
                    spec.scripts.prepare, int(code.group(1)), error.details[1:]
                ) from error
            raise


def dockerfile_for(spec: PrepareSpec) -> str:
    """A Dockerfile whose ENV values arrive byte-exact and can never add instructions.

    Values travel as build arguments and are only referenced here, because a Dockerfile cannot
    carry every value literally (a newline ends the instruction). The arguments get names of
    their own: an ENV the builder image sets would win over an argument of the same name. The
    label comes first so that every intermediate image of a failed build can be found again.
    """
    lines = [f"FROM {spec.base_image}", f"LABEL {BUILD_ID_LABEL}={spec.build_id}"]
    for index, name in enumerate(spec.env):
        lines += [f"ARG {env_arg(index)}", f'ENV {name}="${{{env_arg(index)}}}"']
    chown = f"--chown={spec.owner[0]}:{spec.owner[1]} " if spec.owner else ""
    for name in _INPUT_DIRS:
        if name in spec.input_dirs:
            lines.append(f"COPY {chown}{name} /tmp/{name}")
    lines += [f'RUN ["{spec.scripts.prepare}"]', f'CMD ["{spec.scripts.run}"]']
    return "\n".join(lines) + "\n"


def env_arg(index: int) -> str:
    return f"STI_ENV_{index}"


class ContainerMethod:
    name = "run"

    def prepare_image(self, host: DockerHost, spec: PrepareSpec, sink: LogSink) -> str:
        container = host.create_container(
            spec.base_image,
            [spec.scripts.prepare],
            name=container_name(spec.build_id, f"{spec.stage}-prepare"),
            build_id=spec.build_id,
            env=spec.env,
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
