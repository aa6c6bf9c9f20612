"""Values for prepare only (--build-env): in prepare's environment, never in the image.

An ENV, a build argument or a container's environment would land in the image's config or
history, and a file copied in would land in a layer. So the values travel as a file on a mount
that is never part of the image (a bind mount of the build context with BuildKit, an anonymous
volume in the container a commit leaves out), and prepare runs under /bin/sh, which reads the
file into its environment and then becomes prepare: the only command line anyone sees (the
image history shows it) names the file, not the values.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from sti.tarstreams import TarPart, empty_directory, small_file

from .protocol import SHELL

CONTEXT_DIR = "build-env"  # in a BuildKit build's context
MOUNT_NAME = ".sti-build-env"  # under the input root, while prepare runs
_FILE = "env"


def mount_point(input_root: str) -> str:
    return f"{input_root.rstrip('/')}/{MOUNT_NAME}"


def prepare_command(prepare: str, input_root: str, build_env: Mapping[str, str]) -> list[str]:
    """prepare's argv: the script itself, or with build-only values the shell that reads them
    into its environment (exported, byte-exact) and execs the script as "$0"."""
    if not build_env:
        return [prepare]
    values = shlex.quote(f"{mount_point(input_root)}/{_FILE}")
    return [SHELL, "-c", f'set -a && . {values} && set +a && exec "$0"', prepare]


def env_file(build_env: Mapping[str, str]) -> bytes:
    """NAME='value' lines the shell reads as they are: single quotes expand nothing, and a
    quote inside a value is closed, escaped and reopened (names are checked shell names)."""
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in build_env.items()).encode()


def context_part(build_env: Mapping[str, str]) -> TarPart:
    """The file in a BuildKit build's context, for RUN --mount (see buildkit_mount)."""
    return small_file(f"{CONTEXT_DIR}/{_FILE}", env_file(build_env))


def volume_parts(build_env: Mapping[str, str]) -> list[TarPart]:
    """The file for a container, put under the input root into the volume at mount_point."""
    return [empty_directory(MOUNT_NAME), small_file(f"{MOUNT_NAME}/{_FILE}", env_file(build_env))]


def buildkit_mount(input_root: str) -> str:
    return f"--mount=type=bind,source={CONTEXT_DIR},target={mount_point(input_root)} "
