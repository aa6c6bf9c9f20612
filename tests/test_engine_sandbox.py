"""Build code runs inside the worker's limits (STI_BUILD_MEMORY, STI_BUILD_PIDS,
STI_BUILD_NETWORK, STI_BUILD_PRIVILEGES), with both methods, on the real engine."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from sti.errors import InvalidInput
from sti_worker.engine.docker_host import DockerHost
from sti_worker.engine.sandbox import KEPT_CAPABILITIES, Sandbox
from tests.dockertools import temporary_image
from tests.engine_helpers import METHODS, build
from tests.images import RUN

pytestmark = pytest.mark.docker

MiB = 1024**2
# capability numbers of linux/capability.h
_CAPABILITY_BITS = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "NET_BIND_SERVICE": 10,
    "AUDIT_WRITE": 29,
}
PROBE = """\
#!/bin/sh
grep -E '^(NoNewPrivs|CapEff|CapBnd):' /proc/self/status
echo "interfaces: $(ls /sys/class/net | tr '\\n' ' ')"
"""


def _host(sandbox: Sandbox, builder: str = "auto") -> Iterator[DockerHost]:
    host = DockerHost(builder=builder, sandbox=sandbox)
    yield host
    host.close()


@pytest.fixture
def probe_image(api: docker.APIClient) -> Iterator[str]:
    with temporary_image(
        api, {"/usr/bin/prepare": PROBE, "/usr/bin/run": RUN}, name="probe"
    ) as tag:
        yield tag


def _status(lines: list[str], field: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{field}:"))


def test_the_kept_capabilities_are_the_ones_the_test_counts() -> None:
    assert set(KEPT_CAPABILITIES) == set(_CAPABILITY_BITS)


@METHODS
def test_build_code_runs_without_new_privileges_and_with_fewer_capabilities_by_default(
    docker_host: DockerHost, probe_image: str, source: str, app_tag: str, method: str
) -> None:
    result, lines = build(docker_host, source, probe_image, app_tag, method=method, clean=True)
    assert result.success, result.messages
    wanted = sum(1 << bit for bit in _CAPABILITY_BITS.values())
    assert _status(lines, "NoNewPrivs") == "1"
    assert int(_status(lines, "CapEff"), 16) == wanted
    assert int(_status(lines, "CapBnd"), 16) == wanted  # nothing to regain through exec
    assert "interfaces: eth0 lo " in lines  # the default network: bridge


def test_the_engine_defaults_can_be_chosen_instead(
    probe_image: str, source: str, app_tag: str
) -> None:
    for host in _host(Sandbox.engine_defaults()):  # the build method on BuildKit, then
        result, lines = build(host, source, probe_image, app_tag, clean=True)
        assert result.success, result.messages
        assert _status(lines, "NoNewPrivs") == "0"
        assert int(_status(lines, "CapEff"), 16) & (1 << 27)  # MKNOD, which Docker grants


@pytest.mark.parametrize(
    ("method", "builder"),
    # the run method is the container's path too
    [("build", "buildkit"), ("build", "legacy"), ("build", "container")],
)
def test_a_build_without_network_sees_only_its_loopback(
    probe_image: str, source: str, app_tag: str, method: str, builder: str
) -> None:
    sandbox = Sandbox(memory_bytes=0, pids=0, network="none", privileges="engine")
    for host in _host(sandbox, builder):
        result, lines = build(host, source, probe_image, app_tag, method=method, clean=True)
        assert result.success, result.messages
        assert "interfaces: lo " in lines


@pytest.mark.parametrize(("method", "builder"), [("run", "auto"), ("build", "legacy")])
def test_prepare_over_the_memory_limit_fails_saying_so(
    api: docker.APIClient, source: str, app_tag: str, method: str, builder: str
) -> None:
    # dd holds a whole block in memory
    prepare = "#!/bin/sh\necho allocating\ndd if=/dev/zero of=/dev/null bs=96M count=1\n"
    privileges = "engine" if builder == "legacy" else "restricted"
    sandbox = Sandbox(
        memory_bytes=32 * MiB, pids=0 if builder == "legacy" else 64, privileges=privileges
    )
    with temporary_image(api, {"/usr/bin/prepare": prepare, "/usr/bin/run": RUN}) as builder_image:
        for host in _host(sandbox, builder):
            result, lines = build(host, source, builder_image, app_tag, method=method, clean=True)
    assert not result.success
    assert result.error_code == "BuildFailed"
    killed = "/usr/bin/prepare was killed (exit code 137) at the build memory limit of 32 MiB"
    assert any(killed in message for message in result.messages), result.messages
    assert "allocating" in lines
    assert not api.images(name=app_tag)


def test_prepare_over_the_process_limit_fails_with_the_limit_named(
    api: docker.APIClient, source: str, app_tag: str
) -> None:
    prepare = (
        "#!/bin/sh\nset -e\ni=0\n"
        'while [ "$i" -lt 40 ]; do sleep 3 & i=$((i + 1)); done\necho "all started"\nwait\n'
    )
    with temporary_image(api, {"/usr/bin/prepare": prepare, "/usr/bin/run": RUN}) as builder_image:
        for host in _host(Sandbox(pids=16)):  # the build method, in a container
            result, lines = build(host, source, builder_image, app_tag, clean=True)
    assert not result.success
    assert result.error_code == "BuildFailed"
    assert "all started" not in lines
    assert any("fork" in line for line in lines), lines
    assert any("processes 16" in message for message in result.messages), result.messages
    assert not api.images(name=app_tag)


def test_a_prepare_within_the_limits_succeeds(
    api: docker.APIClient, source: str, app_tag: str
) -> None:
    prepare = "#!/bin/sh\nset -e\ndd if=/dev/zero of=/dev/null bs=8M count=1\nsleep 1 & wait\n"
    with temporary_image(api, {"/usr/bin/prepare": prepare, "/usr/bin/run": RUN}) as builder_image:
        for host in _host(Sandbox(memory_bytes=64 * MiB, pids=16)):
            result, _ = build(host, source, builder_image, app_tag, clean=True)
    assert result.success, result.messages


@pytest.mark.parametrize("builder", ["buildkit", "legacy"])
def test_an_engine_builder_named_with_limits_it_cannot_hold_is_refused(builder: str) -> None:
    with pytest.raises(InvalidInput, match="STI_BUILD_PRIVILEGES=restricted"):
        DockerHost(builder=builder, sandbox=Sandbox(memory_bytes=0, pids=0))
