"""Where prepare runs is decided once, from the method, the build limits and the engine, and the
build log says which way and why."""

from __future__ import annotations

import pytest

from sti.errors import InvalidBuildMethod
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.prepare_ways import PrepareWay, prepare_way
from sti_worker.engine.sandbox import Sandbox
from tests.engine_helpers import METHODS, build

MEMORY = Sandbox(memory_bytes=64 * 1024**2, pids=0, privileges="engine")


def _way(method: str, builder: str, sandbox: Sandbox, *, build_env: bool = False) -> PrepareWay:
    host = DockerHost(builder=builder, sandbox=sandbox)
    try:
        return prepare_way(method, host, build_env=build_env)
    finally:
        host.close()


def test_the_default_limits_run_prepare_in_a_container_and_say_which_bind() -> None:
    way = _way("build", "auto", Sandbox())
    assert way.place == "container"
    assert way.describe().startswith("prepare runs in a container: the build limits ")
    for setting in ("STI_BUILD_PIDS", "STI_BUILD_PRIVILEGES=restricted"):
        assert setting in way.why
    assert "BuildKit on this engine holds none of them" in way.why


def test_lifted_limits_run_prepare_on_buildkit() -> None:
    way = _way("build", "auto", Sandbox.engine_defaults())
    assert (way.place, way.on_buildkit) == ("buildkit", True)
    assert way.describe().startswith("prepare runs on BuildKit: method build")


def test_a_memory_limit_alone_goes_to_the_legacy_builder_which_holds_it() -> None:
    way = _way("build", "auto", MEMORY)
    assert way.place == "legacy"
    assert "BuildKit cannot hold STI_BUILD_MEMORY=67108864" in way.why


@pytest.mark.parametrize("sandbox", [Sandbox(), Sandbox.engine_defaults()])
def test_method_run_is_a_container_whatever_the_limits(sandbox: Sandbox) -> None:
    assert _way("run", "auto", sandbox) == PrepareWay("container", "method run")


def test_build_env_on_the_legacy_builder_runs_in_a_container() -> None:
    way = _way("build", "legacy", Sandbox.engine_defaults(), build_env=True)
    assert way.place == "container"
    assert "RUN --mount" in way.why
    assert _way("build", "buildkit", Sandbox.engine_defaults(), build_env=True).on_buildkit


@pytest.mark.parametrize("builder", ["legacy", "container"])
def test_a_builder_set_by_sti_builder_says_so(builder: str) -> None:
    way = _way("build", builder, Sandbox.engine_defaults())
    assert way.place == builder
    assert way.why == f"method build, STI_BUILDER={builder}"


def test_an_unknown_method_is_refused_by_name() -> None:
    with pytest.raises(InvalidBuildMethod, match="'docker' is unknown"):
        _way("docker", "auto", Sandbox())


@METHODS
def test_the_build_log_says_the_way_once(
    docker_host: DockerHost, images: dict[str, str], source: str, app_tag: str, method: str
) -> None:
    result, lines = build(docker_host, source, images["sti-fake"], app_tag, method=method)
    assert result.success, result.messages
    said = [line for line in lines if line.startswith("prepare runs ")]
    assert said == [prepare_way(method, docker_host, build_env=False).describe()]
