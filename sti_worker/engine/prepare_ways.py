"""Where prepare runs, decided once per build, in one place: from the request's method, its
build-only values, the build limits and the engine's builders; said in the build log with why.

Method `run` always runs prepare in a container. Method `build` runs the generated Dockerfile on
the engine's builder when that builder holds every build limit set (BuildKit holds the network
only, the legacy builder memory too: the Engine API passes nothing else to a RUN step), and in a
container otherwise, as it does when --build-env values must stay out of the image and the
engine has only the legacy builder (no RUN --mount).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sti.errors import InvalidBuildMethod
from sti.model import METHODS

from .docker_host import DockerHost
from .methods import BuildMethod, ContainerMethod, EngineBuildMethod

Place = Literal["buildkit", "legacy", "container"]
_PLACE_NAMES = {"buildkit": "on BuildKit", "legacy": "on the legacy builder"}


@dataclass(frozen=True)
class PrepareWay:
    """Where prepare runs (place) and why, for the log."""

    place: Place
    why: str

    @property
    def method(self) -> BuildMethod:
        return ContainerMethod() if self.place == "container" else EngineBuildMethod()

    @property
    def on_buildkit(self) -> bool:
        return self.place == "buildkit"

    def describe(self) -> str:
        return f"prepare runs {_PLACE_NAMES.get(self.place, 'in a container')}: {self.why}"


def prepare_way(method: str, host: DockerHost, *, build_env: bool) -> PrepareWay:
    """The way prepare runs for a request of this method on this host."""
    if method not in METHODS:  # a request checks its method; a caller of the engine may not
        raise InvalidBuildMethod(
            f"build method {method!r} is unknown; use one of: {', '.join(METHODS)}"
        )
    if method == "run":
        return PrepareWay("container", "method run")
    builder = host.builder
    if builder == "container":
        return PrepareWay("container", _why_no_engine_builder(host))
    if build_env and builder != "buildkit":
        return PrepareWay(
            "container",
            "--build-env values stay out of the image only through BuildKit's RUN --mount, and "
            "this engine builds with the legacy builder",
        )
    if host.builder_setting == builder:
        return PrepareWay(builder, f"method build, STI_BUILDER={builder}")
    if builder == "legacy":
        why = (
            f"method build; BuildKit cannot hold {_listed(host.sandbox.not_held_by('buildkit'))}"
            if host.has_buildkit
            else "method build, and this engine has no BuildKit"
        )
        return PrepareWay("legacy", why)
    return PrepareWay("buildkit", "method build, and no build limit is set that it cannot hold")


def _why_no_engine_builder(host: DockerHost) -> str:
    if host.builder_setting == "container":
        return "method build, STI_BUILDER=container"
    legacy = host.sandbox.not_held_by("legacy")
    if not host.has_buildkit:
        return f"the build limits {_listed(legacy)} are set and the legacy builder cannot hold them"
    buildkit = host.sandbox.not_held_by("buildkit")
    return (
        f"the build limits {_listed(buildkit)} are set and BuildKit on this engine holds none "
        f"of them (nor does the legacy builder hold {_listed(legacy)})"
    )


def _listed(settings: list[str]) -> str:
    return ", ".join(settings)
